// report.cc: formats a chute-load run's summary as text or JSON.

#include "tools/chute-load/report.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace chute::load {
namespace {

struct Latency {
  const char* name;
  const Histogram* histogram;
};

std::vector<Latency> Latencies(const Stats& s) {
  return {{"connect_to_banner", &s.banner_us},
          {"tls_handshake", &s.tls_us},
          {"auth", &s.auth_us},
          {"end_of_data_to_250", &s.data_us},
          {"message", &s.message_us}};
}

double PerSecond(uint64_t count, double elapsed_s) {
  return elapsed_s > 0 ? static_cast<double>(count) / elapsed_s : 0;
}

std::string JsonString(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      absl::StrAppend(&out, "\\", std::string(1, c));
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", c));
    } else {
      out.push_back(c);
    }
  }
  return out + "\"";
}

std::string Ms(uint64_t micros) {
  return absl::StrFormat("%.3f", static_cast<double>(micros) / 1000.0);
}

std::string CapJson(const CapReport& cap) {
  std::vector<std::string> refused;
  for (const auto& [key, count] : cap.refused) {
    refused.push_back(absl::StrCat(JsonString(key), ":", count));
  }
  return absl::StrCat("{\"cap\":", cap.cap, ",\"attempted\":", cap.attempted,
                      ",\"accepted\":", cap.accepted, ",\"refused\":{", absl::StrJoin(refused, ","),
                      "},\"exact\":", cap.exact ? "true" : "false", "}");
}

std::string CapText(const char* name, const CapReport& cap) {
  std::vector<std::string> refused;
  for (const auto& [key, count] : cap.refused) {
    refused.push_back(absl::StrCat(key, " x", count));
  }
  return absl::StrFormat("%s cap %d: %d attempted, %d accepted, refused: %s -> %s\n", name, cap.cap,
                         cap.attempted, cap.accepted,
                         refused.empty() ? "none" : absl::StrJoin(refused, ", "),
                         cap.exact ? "exact" : "NOT EXACT");
}

const char* TlsName(TlsMode mode) {
  return mode == TlsMode::kNone ? "none" : mode == TlsMode::kStartTls ? "starttls" : "implicit";
}

const char* AuthName(AuthMech mech) {
  switch (mech) {
    case AuthMech::kNone:
      return "none";
    case AuthMech::kPlain:
      return "plain";
    case AuthMech::kLogin:
      return "login";
    case AuthMech::kXoauth2:
      return "xoauth2";
  }
  return "?";
}

}  // namespace

std::string FormatJson(const RunReport& r) {
  const Stats& s = *r.stats;
  const Options& o = *r.options;
  double t = r.elapsed_s;
  uint64_t messages = s.messages.load();
  std::string out = absl::StrCat(
      "{\"scenario\":", JsonString(ScenarioName(o.scenario)),
      ",\"target\":", JsonString(o.target_text), ",\"tls\":\"", TlsName(o.tls), "\",\"auth\":\"",
      AuthName(o.auth), "\",\"threads\":", o.threads, ",\"connections\":", o.connections,
      ",\"rate_target_per_s\":", o.rate_per_s, ",\"elapsed_s\":", absl::StrFormat("%.3f", t),
      ",\"completed\":", r.completed ? "true" : "false", ",\"messages\":", messages,
      ",\"recipients\":", s.recipients, ",\"message_bytes\":", s.message_bytes,
      ",\"messages_per_s\":", absl::StrFormat("%.1f", PerSecond(messages, t)),
      ",\"recipients_per_s\":", absl::StrFormat("%.1f", PerSecond(s.recipients, t)),
      ",\"mb_per_s\":", absl::StrFormat("%.3f", PerSecond(s.message_bytes, t) / 1e6),
      ",\"connections_started\":", s.connections_started,
      ",\"connections_established\":", s.connections_established,
      ",\"connections_per_s\":", absl::StrFormat("%.1f", PerSecond(s.connections_established, t)),
      ",\"banners\":", s.banners, ",\"tls_handshakes\":", s.tls_handshakes,
      ",\"tls_handshakes_per_s\":", absl::StrFormat("%.1f", PerSecond(s.tls_handshakes, t)),
      ",\"auths\":", s.auths, ",\"sessions_ready\":", s.sessions_ready, ",\"latency_us\":{");
  std::vector<std::string> parts;
  for (const Latency& l : Latencies(s)) {
    const Histogram& h = *l.histogram;
    parts.push_back(absl::StrCat("\"", l.name, "\":{\"count\":", h.count(),
                                 ",\"p50\":", h.Percentile(0.5), ",\"p90\":", h.Percentile(0.9),
                                 ",\"p99\":", h.Percentile(0.99), ",\"p999\":", h.Percentile(0.999),
                                 ",\"max\":", h.max(), "}"));
  }
  absl::StrAppend(&out, absl::StrJoin(parts, ","), "},\"errors\":{");
  parts.clear();
  for (const auto& [key, count] : s.errors) {
    parts.push_back(absl::StrCat(JsonString(key), ":", count));
  }
  absl::StrAppend(&out, absl::StrJoin(parts, ","), "},\"error_total\":", s.error_count.load());
  if (r.memory) {
    const MemoryReport& m = *r.memory;
    uint64_t n = std::max<uint64_t>(1, m.connections);
    absl::StrAppend(
        &out, ",\"memory\":{\"server_pid\":", m.server_pid, ",\"connections\":", m.connections,
        ",\"rss_before_bytes\":", m.rss_before_bytes, ",\"rss_after_bytes\":", m.rss_after_bytes,
        ",\"rss_per_connection_bytes\":",
        m.rss_after_bytes > m.rss_before_bytes ? (m.rss_after_bytes - m.rss_before_bytes) / n : 0,
        ",\"pss_before_bytes\":", m.pss_before_bytes, ",\"pss_after_bytes\":", m.pss_after_bytes,
        ",\"pss_per_connection_bytes\":",
        m.pss_after_bytes > m.pss_before_bytes ? (m.pss_after_bytes - m.pss_before_bytes) / n : 0,
        "}");
  }
  if (r.ip_cap || r.tenant_cap) {
    absl::StrAppend(&out, ",\"caps\":{");
    if (r.ip_cap) {
      absl::StrAppend(&out, "\"ip\":", CapJson(*r.ip_cap), r.tenant_cap ? "," : "");
    }
    if (r.tenant_cap) {
      absl::StrAppend(&out, "\"tenant\":", CapJson(*r.tenant_cap));
    }
    absl::StrAppend(&out, "}");
  }
  absl::StrAppend(&out, ",\"exit_code\":", r.exit_code, "}\n");
  return out;
}

std::string FormatText(const RunReport& r) {
  const Stats& s = *r.stats;
  const Options& o = *r.options;
  double t = r.elapsed_s;
  uint64_t messages = s.messages.load();
  std::string out = absl::StrFormat(
      "chute-load %s -> %s (tls %s, auth %s, %d connections, %d threads, %s)\n"
      "elapsed %.3f s%s\n"
      "messages   %10d  %10.1f /s\n"
      "recipients %10d  %10.1f /s\n"
      "data       %10.3f MB %7.3f MB/s\n"
      "connections%10d  %10.1f /s (%d started)\n"
      "tls        %10d  %10.1f /s\n"
      "auth       %10d\n",
      ScenarioName(o.scenario), o.target_text, TlsName(o.tls), AuthName(o.auth), o.connections,
      o.threads,
      o.rate_per_s > 0 ? absl::StrFormat("open loop at %.1f msg/s", o.rate_per_s)
                       : std::string("closed loop"),
      t, r.completed ? "" : " (NOT completed)", messages, PerSecond(messages, t), s.recipients,
      PerSecond(s.recipients, t), static_cast<double>(s.message_bytes) / 1e6,
      PerSecond(s.message_bytes, t) / 1e6, s.connections_established,
      PerSecond(s.connections_established, t), s.connections_started, s.tls_handshakes,
      PerSecond(s.tls_handshakes, t), s.auths);
  absl::StrAppend(&out, absl::StrFormat("latency ms           %8s %9s %9s %9s %9s %9s\n", "count",
                                        "p50", "p90", "p99", "p99.9", "max"));
  for (const Latency& l : Latencies(s)) {
    const Histogram& h = *l.histogram;
    absl::StrAppend(
        &out, absl::StrFormat("  %-18s %8d %9s %9s %9s %9s %9s\n", l.name, h.count(),
                              Ms(h.Percentile(0.5)), Ms(h.Percentile(0.9)), Ms(h.Percentile(0.99)),
                              Ms(h.Percentile(0.999)), Ms(h.max())));
  }
  if (s.errors.empty()) {
    absl::StrAppend(&out, "errors: none\n");
  } else {
    absl::StrAppend(&out, "errors:\n");
    for (const auto& [key, count] : s.errors) {
      absl::StrAppend(&out, absl::StrFormat("  %-40s %d\n", key, count));
    }
  }
  if (r.memory) {
    const MemoryReport& m = *r.memory;
    uint64_t n = std::max<uint64_t>(1, m.connections);
    auto per = [n](uint64_t before, uint64_t after) {
      return after > before ? (after - before) / n : 0;
    };
    absl::StrAppend(
        &out,
        absl::StrFormat(
            "server %d memory with %d idle connections: RSS %d -> %d bytes (%d bytes/connection), "
            "PSS %d -> %d bytes (%d bytes/connection)\n",
            m.server_pid, m.connections, m.rss_before_bytes, m.rss_after_bytes,
            per(m.rss_before_bytes, m.rss_after_bytes), m.pss_before_bytes, m.pss_after_bytes,
            per(m.pss_before_bytes, m.pss_after_bytes)));
  }
  if (r.ip_cap) {
    absl::StrAppend(&out, CapText("per-IP", *r.ip_cap));
  }
  if (r.tenant_cap) {
    absl::StrAppend(&out, CapText("per-tenant", *r.tenant_cap));
  }
  absl::StrAppend(&out, "exit ", r.exit_code, "\n");
  return out;
}

}  // namespace chute::load
