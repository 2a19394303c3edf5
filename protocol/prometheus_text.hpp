#pragma once
// Prometheus' text exposition format, version 0.0.4: the one place Ferry
// writes it (agent and orchestrator /metrics). Families are written in the
// order they are declared, HELP and TYPE first, then their samples; label
// values and help text are escaped as the format requires; histograms get
// cumulative `_bucket{le=...}` lines ending in "+Inf", then `_sum`, `_count`.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ferry::prom {

inline constexpr std::string_view content_type = "text/plain; version=0.0.4; charset=utf-8";

enum class metric_type { counter, gauge, histogram };

using labels = std::vector<std::pair<std::string, std::string>>;

// Observations counted into fixed buckets (upper bounds, ascending; +Inf is
// implicit).
class histogram {
public:
  explicit histogram(std::vector<double> upper_bounds);
  // One counted elsewhere (a guest process's figures): `counts` per bucket
  // as counts() gives them. Nothing if bounds and counts do not fit
  // (ascending bounds, one count more than bounds).
  static std::optional<histogram> from_counts(std::vector<double> bounds,
                                              std::vector<uint64_t> counts, double sum);
  void observe(double value);
  const std::vector<double>& bounds() const { return bounds_; }
  // Per bucket, not cumulative; one more entry than bounds() (the +Inf one).
  const std::vector<uint64_t>& counts() const { return counts_; }
  double sum() const { return sum_; }
  uint64_t count() const { return count_; }

private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

class text_writer {
public:
  // Starts a family. Its HELP/TYPE lines are written with its first sample:
  // a family without samples leaves no trace. Names must satisfy
  // valid_metric_name() (checked by the tests that render every family).
  void family(std::string_view name, metric_type type, std::string_view help);
  // One sample of the current counter or gauge family.
  void sample(const labels& l, double value);
  // The current histogram family's series for `l`.
  void sample(const labels& l, const histogram& h);
  const std::string& text() const { return out_; }

private:
  void header();
  void line(std::string_view suffix, const labels& l,
            const std::pair<std::string, std::string>* extra, double value);

  std::string out_;
  std::string name_;
  std::string help_;
  metric_type type_ = metric_type::gauge;
  bool header_written_ = false;
};

bool valid_metric_name(std::string_view name);
bool valid_label_name(std::string_view name);
// Backslash, double quote and newline escaped (label values).
std::string escape_label_value(std::string_view value);
// Backslash and newline escaped (HELP text).
std::string escape_help(std::string_view help);
// Integers as integers, otherwise shortest round-trip; +Inf, -Inf, NaN.
std::string format_value(double value);

} // namespace ferry::prom
