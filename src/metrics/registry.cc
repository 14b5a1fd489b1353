// registry.cc: the Prometheus text exposition: families, scrapes, escaping and number formats.

#include "metrics/registry.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace chute::metrics {

namespace {

// Doubles below this print as integers when they hold one: every integer up to 2^53 is exact.
constexpr double kExactIntegerMax = 9007199254740992.0;
// The longest shortest-round-trip text of a double ("-2.2250738585072014e-308" is 24).
constexpr size_t kDoubleCharsMax = 32;
// Significant digits that always read back the same double (max_digits10).
constexpr int kDoubleDigitsMax = std::numeric_limits<double>::max_digits10;

bool IsMetricName(absl::string_view name) {
  if (name.empty()) {
    return false;
  }
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) {
      return false;
    }
  }
  return true;
}

bool IsLabelName(absl::string_view name) {
  return IsMetricName(name) && name.find(':') == absl::string_view::npos &&
         name.substr(0, 2) != "__";
}

void AppendDouble(double v, std::string* out) {
  if (std::isnan(v)) {
    out->append("NaN");
  } else if (std::isinf(v)) {
    out->append(v > 0 ? "+Inf" : "-Inf");
  } else if (v == std::trunc(v) && std::fabs(v) < kExactIntegerMax) {
    absl::StrAppend(out, static_cast<int64_t>(v));
  } else {
    // The fewest significant digits that read back the same double, in %g's style (fixed
    // from 1e-4 up, so that le="0.0005" stays what it always was, exponent otherwise).
    char text[kDoubleCharsMax];
    char* end = text;
    for (int digits = 1; digits <= kDoubleDigitsMax; ++digits) {
      end = std::to_chars(text, text + sizeof(text), v, std::chars_format::general, digits).ptr;
      double back = 0;
      std::from_chars(text, end, back);
      if (back == v) {
        break;
      }
    }
    out->append(text, end);
  }
}

// SeriesKey: the label values as one map key (length-prefixed: no value can fake a boundary).
std::string SeriesKey(Labels labels) {
  std::string key;
  for (absl::string_view value : labels) {
    absl::StrAppend(&key, value.size(), ":", value);
  }
  return key;
}

}  // namespace

double Value::AsDouble() const {
  switch (kind_) {
    case Kind::kUnsigned:
      return static_cast<double>(unsigned_);
    case Kind::kSigned:
      return static_cast<double>(signed_);
    case Kind::kDouble:
      return double_;
  }
  return double_;
}

Value& Value::operator+=(const Value& other) {
  if (kind_ == other.kind_ && kind_ == Kind::kUnsigned) {
    unsigned_ += other.unsigned_;
  } else if (kind_ == other.kind_ && kind_ == Kind::kSigned) {
    signed_ += other.signed_;
  } else {
    double_ = AsDouble() + other.AsDouble();
    kind_ = Kind::kDouble;
  }
  return *this;
}

void Value::AppendTo(std::string* out) const {
  switch (kind_) {
    case Kind::kUnsigned:
      absl::StrAppend(out, unsigned_);
      return;
    case Kind::kSigned:
      absl::StrAppend(out, signed_);
      return;
    case Kind::kDouble:
      AppendDouble(double_, out);
      return;
  }
}

void AppendLabelValue(absl::string_view value, std::string* out) {
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out->push_back('\\');
      out->push_back(c);
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
}

void AppendHelp(absl::string_view help, std::string* out) {
  for (char c : help) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
}

std::vector<double> LatencyBounds() {
  return std::vector<double>(std::begin(LatencyHistogram::kBoundsS),
                             std::end(LatencyHistogram::kBoundsS));
}

struct Scrape::Series {
  std::vector<Sample> samples;
  absl::flat_hash_map<std::string, size_t> by_labels;
};

Scrape::Scrape(const Registry* registry) : registry_(registry) {
  series_.reserve(registry->families_.size());
  for (size_t i = 0; i < registry->families_.size(); ++i) {
    series_.push_back(std::make_unique<Series>());
  }
}

Scrape::~Scrape() = default;

Scrape::Sample* Scrape::Find(Family family, Labels labels, bool histogram) {
  CHECK(family.index < series_.size());
  const Registry::Definition& definition = registry_->families_[family.index];
  bool fits = (definition.type == Type::kHistogram) == histogram &&
              labels.size() == definition.labels.size();
  DCHECK_MSG(fits, definition.name.c_str());
  if (!fits) {
    return nullptr;
  }
  Series& series = *series_[family.index];
  auto [it, inserted] = series.by_labels.try_emplace(SeriesKey(labels), series.samples.size());
  if (inserted) {
    Sample& sample = series.samples.emplace_back();
    for (absl::string_view value : labels) {
      sample.labels.emplace_back(value);
    }
    if (histogram) {
      sample.counts.assign(definition.bounds.size() + 1, 0);
    }
  }
  return &series.samples[it->second];
}

void Scrape::Add(Family family, Labels labels, Value value) {
  Sample* sample = Find(family, labels, false);
  if (sample != nullptr) {
    sample->value += value;
  }
}

void Scrape::AddHistogram(Family family, Labels labels, absl::Span<const uint64_t> counts,
                          Value sum) {
  Sample* sample = Find(family, labels, true);
  DCHECK(sample == nullptr || counts.size() == sample->counts.size());
  if (sample == nullptr || counts.size() != sample->counts.size()) {
    return;
  }
  for (size_t i = 0; i < counts.size(); ++i) {
    sample->counts[i] += counts[i];
  }
  sample->value += sum;
}

void Scrape::AddLatency(Family family, Labels labels, const LatencyHistogram& histogram) {
  uint64_t counts[LatencyHistogram::kBuckets] = {};
  uint64_t sum_us = 0;
  histogram.AddTo(counts, &sum_us);
  AddHistogram(family, labels, counts, static_cast<double>(sum_us) / 1e6);
}

Registry::Registry() = default;
Registry::~Registry() = default;

Family Registry::Add(Definition definition) {
  CHECK_MSG(IsMetricName(definition.name), definition.name.c_str());
  for (const Definition& other : families_) {
    CHECK_MSG(other.name != definition.name, definition.name.c_str());
  }
  for (const std::string& label : definition.labels) {
    CHECK_MSG(IsLabelName(label), label.c_str());
    CHECK_MSG(definition.type != Type::kHistogram || label != "le", definition.name.c_str());
  }
  for (size_t i = 1; i < definition.bounds.size(); ++i) {
    CHECK_MSG(definition.bounds[i - 1] < definition.bounds[i], definition.name.c_str());
  }
  families_.push_back(std::move(definition));
  return Family{families_.size() - 1};
}

Family Registry::AddCounter(std::string name, std::string help, std::vector<std::string> labels) {
  return Add({std::move(name), std::move(help), Type::kCounter, std::move(labels), {}});
}

Family Registry::AddGauge(std::string name, std::string help, std::vector<std::string> labels) {
  return Add({std::move(name), std::move(help), Type::kGauge, std::move(labels), {}});
}

Family Registry::AddHistogram(std::string name, std::string help, std::vector<std::string> labels,
                              std::vector<double> bounds) {
  return Add(
      {std::move(name), std::move(help), Type::kHistogram, std::move(labels), std::move(bounds)});
}

void Registry::AddCollector(Collector collect) { collectors_.push_back(std::move(collect)); }

std::string Registry::Text() const {
  Scrape scrape(this);
  for (const Collector& collect : collectors_) {
    collect(scrape);
  }
  std::string out;
  for (size_t i = 0; i < families_.size(); ++i) {
    AppendFamily(families_[i], scrape.series_[i]->samples, &out);
  }
  return out;
}

namespace {

const char* TypeName(Type type) {
  switch (type) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// AppendSeries: `name{labels}` (or `name` with none), `le` last when given, then the value.
void AppendSeries(absl::string_view name, const std::vector<std::string>& names,
                  const std::vector<std::string>& values, const std::string* le, const Value& value,
                  std::string* out) {
  out->append(name.data(), name.size());
  if (!values.empty() || le != nullptr) {
    out->push_back('{');
    for (size_t i = 0; i < values.size(); ++i) {
      absl::StrAppend(out, i == 0 ? "" : ",", names[i], "=\"");
      AppendLabelValue(values[i], out);
      out->push_back('"');
    }
    if (le != nullptr) {
      absl::StrAppend(out, values.empty() ? "" : ",", "le=\"", *le, "\"");
    }
    out->push_back('}');
  }
  out->push_back(' ');
  value.AppendTo(out);
  out->push_back('\n');
}

}  // namespace

void Registry::AppendFamily(const Definition& family, const std::vector<Scrape::Sample>& samples,
                            std::string* out) const {
  absl::StrAppend(out, "# HELP ", family.name, " ");
  AppendHelp(family.help, out);
  absl::StrAppend(out, "\n# TYPE ", family.name, " ", TypeName(family.type), "\n");
  if (family.type != Type::kHistogram) {
    for (const Scrape::Sample& sample : samples) {
      AppendSeries(family.name, family.labels, sample.labels, nullptr, sample.value, out);
    }
    return;
  }
  std::vector<std::string> le;
  le.reserve(family.bounds.size() + 1);
  for (double bound : family.bounds) {
    le.emplace_back();
    AppendDouble(bound, &le.back());
  }
  le.emplace_back("+Inf");
  std::string bucket = absl::StrCat(family.name, "_bucket");
  std::string sum = absl::StrCat(family.name, "_sum");
  std::string count = absl::StrCat(family.name, "_count");
  for (const Scrape::Sample& sample : samples) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i < sample.counts.size(); ++i) {
      cumulative += sample.counts[i];
      AppendSeries(bucket, family.labels, sample.labels, &le[i], Value(cumulative), out);
    }
    AppendSeries(sum, family.labels, sample.labels, nullptr, sample.value, out);
    AppendSeries(count, family.labels, sample.labels, nullptr, Value(cumulative), out);
  }
}

}  // namespace chute::metrics
