#include "orchestrator/migration_progress.hpp"

#include <boost/json.hpp>

namespace ferry {

namespace json = boost::json;

namespace {

std::optional<uint64_t> count_at(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_number())
    return std::nullopt;
  boost::system::error_code ec;
  const auto n = v->to_number<uint64_t>(ec);
  return ec ? std::nullopt : std::optional<uint64_t>{n};
}

std::optional<double> seconds_at(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_number())
    return std::nullopt;
  return v->to_number<double>() / 1000.0; // QMP reports milliseconds
}

} // namespace

migration_progress migration_progress::parse(const std::string& text) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object())
    return {};
  return from(std::move(v.as_object()));
}

migration_progress migration_progress::from(json::object o) {
  migration_progress p;
  p.raw = std::move(o);
  p.total_s = seconds_at(p.raw, "total-time");
  p.downtime_s = seconds_at(p.raw, "downtime");
  p.downtime_limit_s = seconds_at(p.raw, "downtime-limit");
  if (p.downtime_limit_s && *p.downtime_limit_s <= 0)
    p.downtime_limit_s.reset();
  if (const auto* st = p.raw.if_contains("status"); st != nullptr && st->is_string())
    p.status = std::string{st->as_string()};
  p.postcopy_paused_s = seconds_at(p.raw, "postcopy-paused-time");
  p.postcopy_blocktime_s = seconds_at(p.raw, "postcopy-blocktime");
  if (const auto* ram = p.raw.if_contains("ram"); ram != nullptr && ram->is_object()) {
    const auto& r = ram->as_object();
    p.transferred = count_at(r, "transferred");
    p.remaining = count_at(r, "remaining");
    p.passes = count_at(r, "dirty-sync-count");
    if (const auto* mbps = r.if_contains("mbps"); mbps != nullptr && mbps->is_number())
      p.rate = mbps->to_number<double>() * 1e6 / 8;
  }
  return p;
}

double migration_progress::average_rate() const {
  if (!total_s || !transferred || *total_s <= 0)
    return 0;
  return static_cast<double>(*transferred) / *total_s;
}

} // namespace ferry
