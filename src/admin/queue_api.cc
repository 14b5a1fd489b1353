// queue_api.cc: maps the /queue and /dead HTTP requests onto DeliveryStage control calls, as JSON.

#include "admin/queue_api.h"

#define JSON_NOEXCEPTION 1
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace chute::admin {
namespace {

nlohmann::json EntryJson(const delivery::QueueEntry& e, absl::Time now) {
  absl::Time received = absl::FromUnixMicros(e.received_unix_us);
  nlohmann::json recipients = nlohmann::json::array();
  for (size_t i = 0; i < e.pending.size(); ++i) {
    recipients.push_back({{"address", e.pending[i]}, {"last_reply", e.replies[i]}});
  }
  nlohmann::json out{{"id", e.id},
                     {"route", e.route},
                     {"received", delivery::IsoUtc(received)},
                     {"age_s", absl::ToInt64Seconds(now - received)},
                     {"tenant_id", e.tenant_id},
                     {"account_id", e.account_id},
                     {"sender", e.sender},
                     {"recipients_pending", recipients},
                     {"attempts", e.attempts},
                     {"size_bytes", e.size_bytes},
                     {"held", e.held},
                     {"in_flight", e.in_flight}};
  out["next_attempt"] =
      e.held ? nlohmann::json(nullptr) : nlohmann::json(delivery::IsoUtc(e.next_attempt));
  return out;
}

HttpAnswer Json(int status, const nlohmann::json& body) {
  return HttpAnswer{status,
                    body.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"};
}

HttpAnswer FromStatus(const absl::Status& status, nlohmann::json ok_body) {
  if (status.ok()) {
    return Json(200, ok_body);
  }
  int code = absl::IsNotFound(status) ? 404 : absl::IsAlreadyExists(status) ? 409 : 400;
  return Json(code, {{"error", std::string(status.message())}});
}

}  // namespace

std::optional<HttpAnswer> HandleQueueRequest(delivery::DeliveryStage& queue,
                                             absl::string_view method, absl::string_view path) {
  path = path.substr(0, path.find('?'));
  std::vector<std::string> parts = absl::StrSplit(path, '/', absl::SkipEmpty());
  if (parts.empty() || (parts[0] != "queue" && parts[0] != "dead")) {
    return std::nullopt;
  }
  absl::Time now = absl::Now();
  if (parts[0] == "dead") {
    if (method == "GET" && parts.size() == 1) {
      nlohmann::json list = nlohmann::json::array();
      for (const delivery::DeadEntry& entry : queue.Dead()) {
        nlohmann::json reason = nlohmann::json::parse(entry.json, nullptr, false);
        list.push_back(reason.is_discarded() ? nlohmann::json{{"id", entry.id}} : reason);
      }
      return Json(200, list);
    }
    if (method == "POST" && parts.size() == 3 && parts[2] == "requeue") {
      return FromStatus(queue.Requeue(parts[1]), {{"requeued", parts[1]}});
    }
    return Json(400, {{"error", "unknown dead-letter request"}});
  }
  if (parts.size() == 1 && method == "GET") {
    nlohmann::json list = nlohmann::json::array();
    for (const delivery::QueueEntry& entry : queue.List()) {
      list.push_back(EntryJson(entry, now));
    }
    return Json(200, list);
  }
  if (parts.size() == 2 && parts[1] == "retry" && method == "POST") {
    return Json(200, {{"retried", queue.RetryAll()}});
  }
  if (parts.size() == 2 && method == "GET") {
    absl::StatusOr<delivery::QueueEntry> entry = queue.Show(parts[1]);
    return entry.ok() ? Json(200, EntryJson(*entry, now)) : FromStatus(entry.status(), {});
  }
  if (parts.size() == 2 && method == "DELETE") {
    return FromStatus(queue.Delete(parts[1]), {{"deleted", parts[1]}});
  }
  if (parts.size() == 3 && method == "POST") {
    const std::string& id = parts[1];
    if (parts[2] == "retry") {
      return FromStatus(queue.Retry(id), {{"retried", id}});
    }
    if (parts[2] == "hold") {
      return FromStatus(queue.Hold(id), {{"held", id}});
    }
    if (parts[2] == "release") {
      return FromStatus(queue.Release(id), {{"released", id}});
    }
  }
  return Json(400, {{"error", "unknown queue request"}});
}

}  // namespace chute::admin
