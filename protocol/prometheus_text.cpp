#include "protocol/prometheus_text.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace ferry::prom {

histogram::histogram(std::vector<double> upper_bounds)
  : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {
  std::sort(bounds_.begin(), bounds_.end());
}

std::optional<histogram> histogram::from_counts(std::vector<double> bounds,
                                                std::vector<uint64_t> counts, double sum) {
  if (counts.size() != bounds.size() + 1 || !std::is_sorted(bounds.begin(), bounds.end()))
    return std::nullopt;
  histogram h{std::move(bounds)};
  h.counts_ = std::move(counts);
  h.sum_ = sum;
  for (uint64_t c : h.counts_)
    h.count_ += c;
  return h;
}

void histogram::observe(double value) {
  const auto at = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  ++counts_[static_cast<size_t>(at - bounds_.begin())];
  sum_ += value;
  ++count_;
}

namespace {

bool name_char(char c, bool first, bool colon) {
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (alpha || (colon && c == ':'))
    return true;
  return !first && c >= '0' && c <= '9';
}

const char* type_name(metric_type t) {
  switch (t) {
    case metric_type::counter:
      return "counter";
    case metric_type::gauge:
      return "gauge";
    case metric_type::histogram:
      return "histogram";
  }
  return "untyped";
}

} // namespace

bool valid_metric_name(std::string_view name) {
  if (name.empty())
    return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0, true))
      return false;
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || name.substr(0, 2) == "__")
    return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0, false))
      return false;
  return true;
}

namespace {

// Backslash and newline always; double quotes inside label values only
// (the format leaves them alone in HELP text).
std::string escape(std::string_view text, bool quotes) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (quotes && c == '"')
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

} // namespace

std::string escape_label_value(std::string_view value) {
  return escape(value, true);
}

std::string escape_help(std::string_view help) {
  return escape(help, false);
}

std::string format_value(double value) {
  if (std::isnan(value))
    return "NaN";
  if (std::isinf(value))
    return value > 0 ? "+Inf" : "-Inf";
  // Exact integers (byte counts, page counts) print without an exponent up
  // to 2^53, where doubles stop holding every integer.
  if (value == std::trunc(value) && std::fabs(value) < 9007199254740992.0)
    return std::to_string(static_cast<int64_t>(value));
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  return ec == std::errc{} ? std::string(buf, end) : std::string{"NaN"};
}

void text_writer::family(std::string_view name, metric_type type, std::string_view help) {
  name_ = name;
  help_ = help;
  type_ = type;
  header_written_ = false;
}

void text_writer::header() {
  if (header_written_)
    return;
  header_written_ = true;
  out_ += "# HELP " + name_ + " " + escape_help(help_) + "\n";
  out_ += "# TYPE " + name_ + " " + type_name(type_) + "\n";
}

void text_writer::line(std::string_view suffix, const labels& l,
                       const std::pair<std::string, std::string>* extra, double value) {
  out_ += name_;
  out_ += suffix;
  if (!l.empty() || extra != nullptr) {
    out_ += '{';
    bool first = true;
    auto add = [&](const std::pair<std::string, std::string>& kv) {
      if (!first)
        out_ += ',';
      first = false;
      out_ += kv.first + "=\"" + escape_label_value(kv.second) + "\"";
    };
    for (const auto& kv : l)
      add(kv);
    if (extra != nullptr)
      add(*extra);
    out_ += '}';
  }
  out_ += ' ';
  out_ += format_value(value);
  out_ += '\n';
}

void text_writer::sample(const labels& l, double value) {
  header();
  line("", l, nullptr, value);
}

void text_writer::sample(const labels& l, const histogram& h) {
  header();
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= h.bounds().size(); ++i) {
    cumulative += h.counts()[i];
    const std::pair<std::string, std::string> le{
      "le", i < h.bounds().size() ? format_value(h.bounds()[i]) : std::string{"+Inf"}};
    line("_bucket", l, &le, static_cast<double>(cumulative));
  }
  line("_sum", l, nullptr, h.sum());
  line("_count", l, nullptr, static_cast<double>(h.count()));
}

} // namespace ferry::prom
