#pragma once

// metrics::Registry: chuted's /metrics, the Prometheus text exposition (format 0.0.4), written
// in one place (docs/architecture.md, Metrics). A family (counter, gauge or histogram) is
// registered once, at start-up, with its name, help text and label names. Its samples are not
// kept here: at each scrape the registry calls the collectors it was given, callbacks that the
// owner of the values (a shard's atomics, the spool's gauges, the queue's depth) registered
// with it, and each adds its samples to the Scrape. The registry never reaches into a room.
//
// Contract:
// - Names follow the exposition grammar (metric [a-zA-Z_:][a-zA-Z0-9_:]*, label
//   [a-zA-Z_][a-zA-Z0-9_]*, no "__" prefix, no "le" on a histogram) and a name is registered
//   once: anything else is our bug, a CHECK failure at registration.
// - Label values are given in the order of the family's label names, as many as it has (a
//   DCHECK; a release build drops such a sample rather than print a malformed line). Label
//   values are escaped here (backslash, double quote, newline), help texts too (backslash,
//   newline): a hostile tenant name cannot break the exposition.
// - Order is stable: families print in the order they were registered, a family's samples in
//   the order they were first added. Adding a sample whose label values were already added
//   this scrape sums into it (the shards' counts of one series add up), so no series repeats.
// - A family with no samples this scrape still prints its HELP and TYPE (the text format and
//   promtool accept that): a scrape says which series exist before the first event.
// - Numbers: integers print exactly, without exponent; doubles that hold an integer print as
//   one; other doubles with the fewest digits that read back the same, in %g's style (as
//   absl::StrCat wrote the le labels: "5e-05", "0.0005"); +Inf, -Inf, NaN.
//   Histograms print cumulative _bucket lines with an le label, then _sum and _count.
// - Threads: Add* and AddCollector at start-up, before the first Text; Text from any thread,
//   also concurrently (each scrape has its own Scrape; collectors only read).

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/histogram.h"

namespace chute::metrics {

enum class Type { kCounter, kGauge, kHistogram };

// Value: one sample's number: an exact integer (a count, bytes) or a double (seconds).
class Value {
 public:
  Value() = default;
  template <typename T, std::enable_if_t<std::is_integral_v<T> && std::is_signed_v<T>, int> = 0>
  Value(T v) : kind_(Kind::kSigned), signed_(v) {}  // NOLINT: implicit, like the number
  template <typename T, std::enable_if_t<std::is_integral_v<T> && std::is_unsigned_v<T>, int> = 0>
  Value(T v) : kind_(Kind::kUnsigned), unsigned_(v) {}  // NOLINT
  template <typename T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
  Value(T v) : kind_(Kind::kDouble), double_(static_cast<double>(v)) {}  // NOLINT

  // operator+=: integers of one kind add exactly; mixed kinds add as doubles.
  Value& operator+=(const Value& other);
  // Append: the number as the exposition writes it.
  void AppendTo(std::string* out) const;

 private:
  enum class Kind { kUnsigned, kSigned, kDouble };
  double AsDouble() const;
  Kind kind_ = Kind::kUnsigned;
  uint64_t unsigned_ = 0;
  int64_t signed_ = 0;
  double double_ = 0;
};

// Family: the handle of a registered family (cheap to copy; valid for its registry's life).
struct Family {
  size_t index = SIZE_MAX;
};

// Labels: a sample's label values, in the order of its family's label names.
using Labels = std::initializer_list<absl::string_view>;

class Registry;

// Scrape: the samples of one Text call, filled by the collectors.
class Scrape {
 public:
  // Add: a counter or gauge sample (summed into an earlier one with the same labels).
  void Add(Family family, Labels labels, Value value);
  // AddHistogram: a histogram series: `counts` per bucket, not cumulative (one per bound of
  // the family, then +Inf), and the sum of the observations. Summed like Add.
  void AddHistogram(Family family, Labels labels, absl::Span<const uint64_t> counts, Value sum);
  // AddLatency: a LatencyHistogram (the family must use LatencyBounds()), its sum in seconds.
  void AddLatency(Family family, Labels labels, const LatencyHistogram& histogram);

 private:
  friend class Registry;
  struct Sample {
    std::vector<std::string> labels;
    Value value;                   // counter, gauge; a histogram's sum
    std::vector<uint64_t> counts;  // histogram only: per bucket
  };
  struct Series;  // one family's samples and their index by label values
  explicit Scrape(const Registry* registry);
  ~Scrape();
  // Find: the sample with these label values (new if none), or null when they do not fit.
  Sample* Find(Family family, Labels labels, bool histogram);

  const Registry* registry_;
  std::vector<std::unique_ptr<Series>> series_;  // by family index
};

class Registry {
 public:
  using Collector = std::function<void(Scrape& scrape)>;

  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  Family AddCounter(std::string name, std::string help, std::vector<std::string> labels = {});
  Family AddGauge(std::string name, std::string help, std::vector<std::string> labels = {});
  // AddHistogram: `bounds` are the buckets' upper bounds, ascending; +Inf is implied.
  Family AddHistogram(std::string name, std::string help, std::vector<std::string> labels,
                      std::vector<double> bounds);
  // AddCollector: `collect` adds samples to a scrape; called by every Text, in the order the
  // collectors were added.
  void AddCollector(Collector collect);

  // Text: the exposition: every family's HELP, TYPE and the samples its collectors added.
  std::string Text() const;

 private:
  friend class Scrape;
  struct Definition {
    std::string name;
    std::string help;
    Type type;
    std::vector<std::string> labels;
    std::vector<double> bounds;  // histogram only
  };
  Family Add(Definition definition);
  void AppendFamily(const Definition& family, const std::vector<Scrape::Sample>& samples,
                    std::string* out) const;

  std::vector<Definition> families_;
  std::vector<Collector> collectors_;
};

// LatencyBounds: LatencyHistogram's bucket bounds in seconds, for AddHistogram.
std::vector<double> LatencyBounds();

// AppendLabelValue, AppendHelp: the exposition's escaping (exposed for the tests).
void AppendLabelValue(absl::string_view value, std::string* out);
void AppendHelp(absl::string_view help, std::string* out);

}  // namespace chute::metrics
