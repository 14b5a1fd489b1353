// chutectl queue: the running chuted's delivery queue, through its admin socket
// (tools/chutectl/admin_client.h; JSON over HTTP, endpoints in src/admin/queue_api.h). It does
// not open the directory database.

#include <cstdio>
#include <iostream>

#define JSON_NOEXCEPTION 1
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/chutectl/admin_client.h"
#include "tools/chutectl/commands.h"

namespace chute::ctl {
namespace {

constexpr absl::string_view kHelp =
    R"(Delivery queue of the running chuted (through [admin] socket, as root or chuted's user):
  queue list                  queued messages: id, age, sender, recipients pending, attempts,
                              next attempt, last reply      (Postfix: mailq, postqueue -p)
  queue show ID               one message
  queue retry ID | --all      attempt now                   (Postfix: postqueue -f = --all)
  queue hold ID               no attempts until released    (Postfix: postsuper -h ID)
  queue release ID                                          (Postfix: postsuper -H ID)
  queue delete ID             drop it for good              (Postfix: postsuper -d ID)
  queue dead                  the dead-letter area: why each message was given up
  queue requeue ID            from the dead-letter area back to delivery (postsuper -r ID)
  (Postfix spellings: mailq, postqueue -p, postqueue -f, postqueue -i ID,
   postsuper -d|-h|-H|-r ID)
)";

std::string Str(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

void PrintList(const nlohmann::json& list) {
  if (list.empty()) {
    std::cout << "The queue is empty.\n";
    return;
  }
  Printf("%-23s %-12s %8s %-28s %4s %-20s %s\n", "ID", "ROUTE", "AGE_S", "SENDER", "TRY",
         "NEXT ATTEMPT", "RECIPIENTS PENDING (LAST REPLY)");
  for (const nlohmann::json& m : list) {
    std::string next =
        m["held"].is_boolean() && m["held"].get<bool>() ? "held" : Str(m, "next_attempt");
    std::vector<std::string> recipients;
    for (const nlohmann::json& r : m["recipients_pending"]) {
      std::string reply = Str(r, "last_reply");
      recipients.push_back(reply.empty() ? Str(r, "address")
                                         : absl::StrCat(Str(r, "address"), " (", reply, ")"));
    }
    Printf("%-23s %-12s %8lld %-28s %4lld %-20s %s\n", Str(m, "id").c_str(),
           Str(m, "route").c_str(), static_cast<long long>(m.value("age_s", int64_t{0})),
           Str(m, "sender").c_str(), static_cast<long long>(m.value("attempts", int64_t{0})),
           next.c_str(), absl::StrJoin(recipients, ", ").c_str());
  }
  std::cout << list.size() << " message(s)\n";  // one line per route of a message
}

void PrintDead(const nlohmann::json& list) {
  if (list.empty()) {
    std::cout << "The dead-letter area is empty.\n";
    return;
  }
  for (const nlohmann::json& m : list) {
    std::cout << Str(m, "id") << "  from " << Str(m, "sender") << "  dead since "
              << Str(m, "dead_at") << "  after " << m.value("attempts", int64_t{0})
              << " attempt(s)\n";
    if (m.contains("recipients") && m["recipients"].is_array()) {
      for (const nlohmann::json& r : m["recipients"]) {
        std::string route = Str(r, "route");
        std::cout << "  " << Str(r, "address") << ": " << Str(r, "reply")
                  << (route.empty() ? "" : absl::StrCat(" (route ", route, ")")) << "\n";
      }
    }
  }
}

// Translate: the Postfix spellings to "queue ...".
std::vector<std::string> Translate(std::vector<std::string> words) {
  if (words[0] == "mailq") {
    return {"queue", "list"};
  }
  if (words[0] == "postqueue" && words.size() >= 2) {
    if (words[1] == "-p") {
      return {"queue", "list"};
    }
    if (words[1] == "-f") {
      return {"queue", "retry", "--all"};
    }
    if (words[1] == "-i" && words.size() == 3) {
      return {"queue", "retry", words[2]};
    }
  }
  if (words[0] == "postsuper" && words.size() == 3) {
    static const std::pair<const char*, const char*> kFlags[] = {
        {"-d", "delete"}, {"-h", "hold"}, {"-H", "release"}, {"-r", "requeue"}};
    for (const auto& [flag, verb] : kFlags) {
      if (words[1] == flag) {
        return {"queue", verb, words[2]};
      }
    }
  }
  return words;
}

int Run(Context& context, const std::vector<std::string>& given) {
  std::vector<std::string> words = Translate(given);
  const Config& config = context.config();
  bool json = context.json();
  auto usage = [&](absl::string_view why) {
    int exit = context.Usage(why);
    std::cerr << kHelp;
    return exit;
  };
  if (words.size() < 2 || words[0] != "queue") {
    return usage("which queue command?");
  }
  const std::string& verb = words[1];
  std::string id = words.size() >= 3 ? words[2] : "";
  if (words.size() > 3 || (id.empty() && verb != "list" && verb != "dead") ||
      (!id.empty() && (verb == "list" || verb == "dead")) || id.find('/') != std::string::npos) {
    return usage(absl::StrCat("queue ", verb, ": wrong arguments"));
  }
  std::string method = "POST";
  std::string path;
  if (verb == "list") {
    method = "GET", path = "/queue";
  } else if (verb == "show") {
    method = "GET", path = absl::StrCat("/queue/", id);
  } else if (verb == "retry") {
    path = id == "--all" ? "/queue/retry" : absl::StrCat("/queue/", id, "/retry");
  } else if (verb == "hold" || verb == "release") {
    path = absl::StrCat("/queue/", id, "/", verb);
  } else if (verb == "delete") {
    method = "DELETE", path = absl::StrCat("/queue/", id);
  } else if (verb == "dead") {
    method = "GET", path = "/dead";
  } else if (verb == "requeue") {
    path = absl::StrCat("/dead/", id, "/requeue");
  } else {
    return usage(absl::StrCat("unknown queue command '", verb, "'"));
  }
  absl::StatusOr<AdminAnswer> result = AdminRequest(config, method, path);
  if (!result.ok()) {
    return context.Fail(absl::StrCat(result.status().message(), context.ConfigHint()));
  }
  nlohmann::json body = nlohmann::json::parse(result->body, nullptr, false);
  if (result->status != 200) {
    return context.Fail(body.is_object() ? Str(body, "error") : std::string("request failed"));
  }
  if (body.is_discarded()) {
    return context.Fail("chuted's answer is not JSON");
  }
  if (!json && !result->node.empty() && (verb == "list" || verb == "dead")) {
    // Each node of a fleet has its own spool and queue: say whose this is.
    std::cout << "Node " << result->node << ":\n";
  }
  if (json) {
    PrintJson(body);
  } else if (verb == "list") {
    PrintList(body);
  } else if (verb == "dead") {
    PrintDead(body);
  } else if (verb == "show") {
    std::cout << body.dump(2) << "\n";
  } else {
    for (auto& [key, value] : body.items()) {
      std::cout << key << ": " << (value.is_string() ? value.get<std::string>() : value.dump())
                << "\n";
    }
  }
  return kExitOk;
}

}  // namespace

extern const CommandGroup kQueueGroup{"queue mailq postqueue postsuper", Run, kHelp};

}  // namespace chute::ctl
