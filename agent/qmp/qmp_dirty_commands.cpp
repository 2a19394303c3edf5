// The monitor's dirty-page commands: set/cancel/query-vcpu-dirty-limit,
// calc-dirty-rate and query-dirty-rate.
#include "agent/qmp/qmp_monitor.hpp"

#include "agent/qmp/qmp_args.hpp"
#include "common/error.hpp"

#include <boost/json.hpp>

namespace ferry {

namespace json = boost::json;
using qmp_args::empty;
using qmp_args::generic;

std::shared_ptr<vcpu_dirty_limit> qmp_monitor::limiter() {
  if (!dirty_limit_ && guest_.dirty_ring() != nullptr)
    dirty_limit_ = std::make_shared<vcpu_dirty_limit>(guest_);
  return dirty_limit_;
}

std::optional<std::string> qmp_monitor::dirty_limit_refusal(const json::object& args,
                                                            const char* verb) const {
  if (guest_.dirty_ring() == nullptr)
    return std::string{"dirty page limit feature requires KVM with accelerator property "
                       "'dirty-ring-size' set"};
  if (const auto* i = args.if_contains("cpu-index")) {
    const int64_t idx = i->to_number<int64_t>();
    if (idx < 0 || idx >= static_cast<int64_t>(guest_.vcpu_count()))
      return std::string{"incorrect cpu index specified"};
  }
  // The migration owns the limit while its dirty-limit capability acts.
  if (migration_.outgoing_engine_running() && settings_.capability("dirty-limit"))
    return std::string{"can't "} + verb + " dirty page rate limit while migration is running";
  return std::nullopt;
}

qmp_result qmp_monitor::change_dirty_limit(const json::object& args, const char* verb,
                                           uint64_t mib_per_s) {
  std::lock_guard lk{mtx_};
  if (auto why = dirty_limit_refusal(args, verb))
    return generic(std::move(*why));
  std::optional<uint32_t> cpu;
  if (const auto* i = args.if_contains("cpu-index"))
    cpu = static_cast<uint32_t>(i->to_number<int64_t>());
  limiter()->set(cpu, mib_per_s);
  return empty();
}

qmp_result qmp_monitor::set_vcpu_dirty_limit(const json::object& args) {
  // A rate of 0 lifts the limit, as cancel-vcpu-dirty-limit does.
  return change_dirty_limit(args, "set", args.at("dirty-rate").to_number<uint64_t>());
}

qmp_result qmp_monitor::cancel_vcpu_dirty_limit(const json::object& args) {
  return change_dirty_limit(args, "cancel", 0);
}

qmp_result qmp_monitor::query_vcpu_dirty_limit(const json::object&) {
  std::lock_guard lk{mtx_};
  json::array out;
  if (dirty_limit_)
    for (const auto& v : dirty_limit_->limited())
      out.push_back(json::object{{"cpu-index", static_cast<int64_t>(v.index)},
                                 {"limit-rate", v.limit},
                                 {"current-rate", v.current}});
  return json::value(std::move(out));
}

dirty_rate_meter& qmp_monitor::meter() {
  if (!dirty_rate_)
    dirty_rate_ = std::make_unique<dirty_rate_meter>(guest_);
  return *dirty_rate_;
}

qmp_result qmp_monitor::calc_dirty_rate(const json::object& args) {
  // The schema has checked types and enum values; QEMU's range rules here.
  const bool in_ms = args.contains("calc-time-unit") && args.at("calc-time-unit") == "millisecond";
  const int64_t t = args.at("calc-time").to_number<int64_t>();
  constexpr int64_t min_ms = 50;
  constexpr int64_t max_ms = 60000;
  const int64_t ms = in_ms ? t : (t > max_ms ? max_ms + 1 : t * 1000);
  if (ms < min_ms || ms > max_ms)
    return generic("Calculation time is out of range [50ms, 60000ms].");
  dirty_rate_request r;
  r.calc_time_ms = static_cast<uint64_t>(ms);
  if (const auto* m = args.if_contains("mode"))
    r.mode = *m == "dirty-ring"     ? dirty_rate_mode::dirty_ring
             : *m == "dirty-bitmap" ? dirty_rate_mode::dirty_bitmap
                                    : dirty_rate_mode::page_sampling;
  if (const auto* sp = args.if_contains("sample-pages")) {
    if (r.mode != dirty_rate_mode::page_sampling)
      return generic("sample-pages is used only in page-sampling mode");
    const int64_t n = sp->to_number<int64_t>();
    if (n < 128 || n > 16384)
      return generic("sample-pages is out of range[128, 16384].");
    r.sample_pages = static_cast<uint64_t>(n);
  }
  std::lock_guard lk{mtx_};
  // The dirty log has one reader at a time; a migration's passes need it.
  if (r.mode == dirty_rate_mode::dirty_bitmap && migration_.outgoing_engine_running())
    return generic("mode dirty-bitmap is unavailable while a migration tracks dirty pages, "
                   "use other method instead.");
  if (auto why = meter().start(r))
    return generic(std::move(*why));
  return empty();
}

qmp_result qmp_monitor::query_dirty_rate(const json::object& args) {
  const bool in_ms = args.contains("calc-time-unit") && args.at("calc-time-unit") == "millisecond";
  std::lock_guard lk{mtx_};
  return json::value(meter().info(in_ms));
}

} // namespace ferry
