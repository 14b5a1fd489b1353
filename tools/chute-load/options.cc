// options.cc: parses and checks chute-load's command line.

#include "tools/chute-load/options.h"

#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace chute::load {
namespace {

absl::Status Bad(absl::string_view flag, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(flag, ": ", why));
}

absl::StatusOr<int64_t> ParseInt(absl::string_view flag, absl::string_view text, int64_t low,
                                 int64_t high) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < low || value > high) {
    return Bad(flag,
               absl::StrCat("expected an integer in ", low, "..", high, ", got '", text, "'"));
  }
  return value;
}

absl::StatusOr<double> ParseSeconds(absl::string_view flag, absl::string_view text, double low,
                                    double high) {
  double value = 0;
  if (!absl::SimpleAtod(text, &value) || !(value >= low) || !(value <= high)) {
    return Bad(flag, absl::StrCat("expected a number in ", low, "..", high, ", got '", text, "'"));
  }
  return value;
}

absl::StatusOr<std::string> ReadSecret(absl::string_view flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Bad(flag, absl::StrCat("cannot read ", path));
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > kSecretBytesMax) {
    return Bad(flag, absl::StrCat(path, " is larger than ", kSecretBytesMax, " bytes"));
  }
  // A trailing newline is the editor's, not the secret's.
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) {
    text.pop_back();
  }
  if (text.empty()) {
    return Bad(flag, absl::StrCat(path, " is empty"));
  }
  return text;
}

absl::StatusOr<Scenario> ParseScenario(absl::string_view text) {
  for (Scenario s : {Scenario::kPersistent, Scenario::kReconnect, Scenario::kBurst, Scenario::kIdle,
                     Scenario::kCaps}) {
    if (text == ScenarioName(s)) {
      return s;
    }
  }
  return Bad("--scenario", absl::StrCat("unknown scenario '", text,
                                        "' (persistent, reconnect, burst, idle, caps)"));
}

// Checks that need every flag: what bounds the run, who authenticates, where it goes.
absl::Status Finish(Options& o, bool have_password, bool have_token, const std::string& auth) {
  if (o.target_text.empty()) {
    return Bad("--target", "required (HOST:PORT)");
  }
  if (!o.allow_remote && !TargetAllowed(o.target.ip)) {
    return Bad("--target", absl::StrCat(o.target_text,
                                        " is not a loopback address; pass --allow-remote to load "
                                        "a server you operate elsewhere"));
  }
  if (have_password && have_token) {
    return Bad("--token-file", "give --password-file or --token-file, not both");
  }
  if (auth.empty()) {
    o.auth = have_token ? AuthMech::kXoauth2 : have_password ? AuthMech::kPlain : AuthMech::kNone;
  } else if (auth == "plain" && have_password) {
    o.auth = AuthMech::kPlain;
  } else if (auth == "login" && have_password) {
    o.auth = AuthMech::kLogin;
  } else if (auth == "xoauth2" && have_token) {
    o.auth = AuthMech::kXoauth2;
  } else if (auth == "none") {
    o.auth = AuthMech::kNone;
  } else {
    return Bad("--auth", "plain|login need --password-file, xoauth2 needs --token-file");
  }
  if (o.auth != AuthMech::kNone && o.user.empty()) {
    return Bad("--user", "required with --password-file or --token-file");
  }
  if (o.auth == AuthMech::kNone && !o.user.empty()) {
    return Bad("--user", "needs --password-file or --token-file");
  }
  if (o.to.empty()) {
    // One mailbox by default: a long run with {n} would make a Maildir per message.
    o.to.push_back("load@example.test");
  }
  if (o.sizes.empty()) {
    o.sizes.push_back({1024, 1});
  }
  if (o.messages == 0 && o.duration_s == 0) {
    o.duration_s = kDefaultDurationS;  // every run is bounded
  }
  if (o.threads == 0) {
    o.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  if (o.scenario == Scenario::kIdle || o.scenario == Scenario::kCaps) {
    o.threads = 1;  // one ring holds every connection: exact counts, no split
  }
  o.threads = std::min(o.threads, o.connections);
  return absl::OkStatus();
}

}  // namespace

const char* ScenarioName(Scenario scenario) {
  switch (scenario) {
    case Scenario::kPersistent:
      return "persistent";
    case Scenario::kReconnect:
      return "reconnect";
    case Scenario::kBurst:
      return "burst";
    case Scenario::kIdle:
      return "idle";
    case Scenario::kCaps:
      return "caps";
  }
  return "?";
}

absl::StatusOr<uint64_t> ParseBytes(absl::string_view text) {
  uint64_t multiplier = 1;
  absl::string_view digits = text;
  if (!digits.empty()) {
    char last = absl::ascii_tolower(digits.back());
    if (last == 'k' || last == 'm' || last == 'g') {
      multiplier = last == 'k' ? 1024 : last == 'm' ? 1024 * 1024 : 1024ull * 1024 * 1024;
      digits.remove_suffix(1);
    }
  }
  uint64_t value = 0;
  if (!absl::SimpleAtoi(digits, &value) || value > kMessageBytesMax / multiplier ||
      value * multiplier > kMessageBytesMax) {
    return Bad("--size", absl::StrCat("expected a size such as 512, 10k or 1m (at most ",
                                      kMessageBytesMax, " bytes), got '", text, "'"));
  }
  return value * multiplier;
}

absl::StatusOr<std::vector<SizeBucket>> ParseSizeDist(absl::string_view text) {
  std::vector<SizeBucket> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    std::vector<absl::string_view> pair = absl::StrSplit(part, ':');
    uint32_t weight = 0;
    if (pair.size() != 2 || !absl::SimpleAtoi(pair[1], &weight) || weight == 0 ||
        weight > 1000000) {
      return Bad("--size-dist",
                 absl::StrCat("expected SIZE:WEIGHT[,SIZE:WEIGHT...], got '", part, "'"));
    }
    absl::StatusOr<uint64_t> bytes = ParseBytes(pair[0]);
    if (!bytes.ok()) {
      return Bad("--size-dist", bytes.status().message());
    }
    out.push_back({*bytes, weight});
  }
  if (out.empty() || out.size() > kSizeDistEntriesMax) {
    return Bad("--size-dist", absl::StrCat("1..", kSizeDistEntriesMax, " entries"));
  }
  return out;
}

uint64_t PickSize(const std::vector<SizeBucket>& sizes, double u) {
  uint64_t total = 0;
  for (const SizeBucket& s : sizes) {
    total += s.weight;
  }
  double point = u * static_cast<double>(total);
  uint64_t seen = 0;
  for (const SizeBucket& s : sizes) {
    seen += s.weight;
    if (point < static_cast<double>(seen)) {
      return s.bytes;
    }
  }
  return sizes.back().bytes;
}

std::string ExpandAddress(absl::string_view pattern, uint64_t counter) {
  return absl::StrReplaceAll(pattern, {{"{n}", absl::StrCat(counter)}});
}

bool TargetAllowed(const IpBytes& ip) {
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  bool mapped = std::equal(kMappedPrefix, kMappedPrefix + 12, ip.begin());
  if (mapped) {
    return ip[12] == 127;
  }
  IpBytes loopback6{};
  loopback6[15] = 1;
  return ip == loopback6;
}

absl::StatusOr<Options> ParseOptions(const std::vector<std::string>& args) {
  Options o;
  bool have_password = false;
  bool have_token = false;
  std::string auth;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    bool has_inline = false;
    if (size_t eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_inline = true;
    }
    auto next = [&]() -> absl::StatusOr<std::string> {
      if (has_inline) {
        return value;
      }
      if (i + 1 >= args.size()) {
        return Bad(flag, "needs a value");
      }
      return args[++i];
    };
    auto boolean = [&](bool* field, bool set) -> absl::Status {
      if (has_inline) {
        return Bad(flag, "takes no value");
      }
      *field = set;
      return absl::OkStatus();
    };
#define CHUTE_LOAD_VALUE(name)                    \
  absl::StatusOr<std::string> name##_or = next(); \
  if (!name##_or.ok()) return name##_or.status(); \
  const std::string& name = *name##_or
    absl::Status status = absl::OkStatus();
    if (flag == "--help" || flag == "-h") {
      return absl::NotFoundError("help");
    } else if (flag == "--target") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<HostPort> hp = ParseHostPort(v);
      if (!hp.ok()) {
        return Bad(flag, absl::StrCat("expected HOST:PORT with a numeric address ",
                                      "(127.0.0.1:587, [::1]:587), got '", v, "'"));
      }
      o.target = *hp;
      o.target_text = v;
    } else if (flag == "--scenario") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<Scenario> s = ParseScenario(v);
      if (!s.ok()) return s.status();
      o.scenario = *s;
    } else if (flag == "--tls") {
      CHUTE_LOAD_VALUE(v);
      if (v == "none") {
        o.tls = TlsMode::kNone;
      } else if (v == "starttls") {
        o.tls = TlsMode::kStartTls;
      } else if (v == "implicit") {
        o.tls = TlsMode::kImplicit;
      } else {
        return Bad(flag, "expected starttls, implicit or none");
      }
    } else if (flag == "--auth") {
      CHUTE_LOAD_VALUE(v);
      if (v != "plain" && v != "login" && v != "xoauth2" && v != "none") {
        return Bad(flag, "expected plain, login, xoauth2 or none");
      }
      auth = v;
    } else if (flag == "--user") {
      CHUTE_LOAD_VALUE(v);
      o.user = v;
    } else if (flag == "--password-file" || flag == "--token-file") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<std::string> secret = ReadSecret(flag, v);
      if (!secret.ok()) return secret.status();
      o.secret = *secret;
      (flag == "--password-file" ? have_password : have_token) = true;
    } else if (flag == "--from") {
      CHUTE_LOAD_VALUE(v);
      o.from = v;
    } else if (flag == "--to") {
      CHUTE_LOAD_VALUE(v);
      if (v.empty() || v.find_first_of("<> \r\n") != std::string::npos) {
        return Bad(flag, "expected an address");
      }
      o.to.push_back(v);
    } else if (flag == "--ehlo") {
      CHUTE_LOAD_VALUE(v);
      o.ehlo = v;
    } else if (flag == "--connections") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<int64_t> n = ParseInt(flag, v, 1, kConnectionsMax);
      if (!n.ok()) return n.status();
      o.connections = static_cast<int>(*n);
    } else if (flag == "--messages") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<int64_t> n = ParseInt(flag, v, 1, int64_t{1} << 40);
      if (!n.ok()) return n.status();
      o.messages = static_cast<uint64_t>(*n);
    } else if (flag == "--messages-per-connection") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<int64_t> n = ParseInt(flag, v, 1, int64_t{1} << 40);
      if (!n.ok()) return n.status();
      o.messages_per_connection = static_cast<uint64_t>(*n);
    } else if (flag == "--duration") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<double> d = ParseSeconds(flag, v, 0.001, kDurationMaxS);
      if (!d.ok()) return d.status();
      o.duration_s = *d;
    } else if (flag == "--rate") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<double> r = ParseSeconds(flag, v, 0.001, 10e6);
      if (!r.ok()) return r.status();
      o.rate_per_s = *r;
    } else if (flag == "--size") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<uint64_t> b = ParseBytes(v);
      if (!b.ok()) return b.status();
      o.sizes = {{*b, 1}};
    } else if (flag == "--size-dist") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<std::vector<SizeBucket>> d = ParseSizeDist(v);
      if (!d.ok()) return d.status();
      o.sizes = *d;
    } else if (flag == "--rcpts") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<int64_t> n = ParseInt(flag, v, 1, kRcptsMax);
      if (!n.ok()) return n.status();
      o.rcpts = static_cast<int>(*n);
    } else if (flag == "--threads") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<int64_t> n = ParseInt(flag, v, 1, kThreadsMax);
      if (!n.ok()) return n.status();
      o.threads = static_cast<int>(*n);
    } else if (flag == "--server-pid") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<int64_t> n = ParseInt(flag, v, 1, 1 << 30);
      if (!n.ok()) return n.status();
      o.server_pid = static_cast<int>(*n);
    } else if (flag == "--ip-cap" || flag == "--tenant-cap") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<int64_t> n = ParseInt(flag, v, 1, kConnectionsMax);
      if (!n.ok()) return n.status();
      (flag == "--ip-cap" ? o.ip_cap : o.tenant_cap) = static_cast<int>(*n);
    } else if (flag == "--timeout") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<double> d = ParseSeconds(flag, v, 0.01, 3600);
      if (!d.ok()) return d.status();
      o.timeout_s = *d;
    } else if (flag == "--hold") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<double> d = ParseSeconds(flag, v, 0, 3600);
      if (!d.ok()) return d.status();
      o.hold_s = *d;
    } else if (flag == "--max-errors") {
      CHUTE_LOAD_VALUE(v);
      absl::StatusOr<int64_t> n = ParseInt(flag, v, 1, int64_t{1} << 40);
      if (!n.ok()) return n.status();
      o.errors_max = static_cast<uint64_t>(*n);
    } else if (flag == "--bdat") {
      status = boolean(&o.bdat, true);
    } else if (flag == "--no-pipelining") {
      status = boolean(&o.pipelining, false);
    } else if (flag == "--json") {
      status = boolean(&o.json, true);
    } else if (flag == "--allow-remote") {
      status = boolean(&o.allow_remote, true);
    } else if (flag == "--no-progress") {
      status = boolean(&o.progress, false);
    } else {
      return Bad(flag, "unknown flag (chute-load --help lists them)");
    }
#undef CHUTE_LOAD_VALUE
    if (!status.ok()) {
      return status;
    }
  }
  absl::Status status = Finish(o, have_password, have_token, auth);
  if (!status.ok()) {
    return status;
  }
  return o;
}

}  // namespace chute::load
