#include "protocol/colo_records.hpp"

#include "protocol/protocol_error.hpp"
#include "protocol/wire_bytes.hpp"

#include <array>
#include <string>

namespace ferry::mig {

namespace {

using wire::get;
using wire::put;

caf::error bad(std::string what) {
  return make_protocol_error(protocol_errc::malformed, "COLO: " + std::move(what));
}

constexpr std::array<std::string_view, colo_message_count> message_names = {
  "checkpoint-ready", "checkpoint-request", "checkpoint-reply", "vmstate-send",
  "vmstate-size",     "vmstate-received",   "vmstate-loaded"};

constexpr std::array<std::string_view, colo_step_count> step_names = {
  "loading", "idle", "requested", "replied", "sending", "sized", "received"};

using m = colo_message;
using s = colo_step;
constexpr std::array<colo_edge, 7> edges = {{
  {s::loading, m::checkpoint_ready, s::idle},
  {s::idle, m::checkpoint_request, s::requested},
  {s::requested, m::checkpoint_reply, s::replied},
  {s::replied, m::vmstate_send, s::sending},
  {s::sending, m::vmstate_size, s::sized},
  {s::sized, m::vmstate_received, s::received},
  {s::received, m::vmstate_loaded, s::idle},
}};

} // namespace

std::string_view to_string(colo_message msg) {
  const auto i = static_cast<uint32_t>(msg);
  return i < colo_message_count ? message_names[i] : std::string_view{"unknown"};
}

std::string_view to_string(colo_step st) {
  return step_names[static_cast<size_t>(st)];
}

std::span<const colo_edge> colo_edges() {
  return edges;
}

std::vector<uint8_t> encode(const colo_record& r) {
  std::vector<uint8_t> out;
  out.reserve(colo_record_size);
  put(out, static_cast<uint32_t>(r.message));
  put(out, uint32_t{0});
  put(out, r.value);
  return out;
}

caf::expected<colo_record> decode_colo(std::span<const uint8_t> p) {
  if (p.size() != colo_record_size)
    return bad("colo record of " + std::to_string(p.size()) + " bytes");
  const auto msg = get<uint32_t>(p.data());
  if (msg >= colo_message_count)
    return bad("unknown COLO message " + std::to_string(msg));
  if (get<uint32_t>(p.data() + 4) != 0)
    return bad("colo record with reserved bits set");
  return colo_record{static_cast<colo_message>(msg), get<uint64_t>(p.data() + 8)};
}

std::vector<uint8_t> encode_heartbeat(uint64_t sequence) {
  std::vector<uint8_t> out;
  put(out, sequence);
  return out;
}

std::vector<uint8_t> encode(const colo_output_record& r) {
  std::vector<uint8_t> out;
  put(out, static_cast<uint32_t>(r.kind));
  put(out, uint32_t{0});
  put(out, r.checkpoint);
  put(out, r.position);
  out.insert(out.end(), r.bytes.begin(), r.bytes.end());
  return out;
}

caf::expected<colo_output_record> decode_colo_output(std::span<const uint8_t> p) {
  if (p.size() < colo_output_head)
    return bad("colo-output record of " + std::to_string(p.size()) + " bytes");
  const auto kind = get<uint32_t>(p.data());
  if (kind > static_cast<uint32_t>(colo_output_kind::released))
    return bad("colo-output kind " + std::to_string(kind));
  if (get<uint32_t>(p.data() + 4) != 0)
    return bad("colo-output reserved field is not 0");
  colo_output_record r;
  r.kind = static_cast<colo_output_kind>(kind);
  r.checkpoint = get<uint64_t>(p.data() + 8);
  r.position = get<uint64_t>(p.data() + 16);
  const auto bytes = p.subspan(colo_output_head);
  if (r.kind != colo_output_kind::output && !bytes.empty())
    return bad("colo-output base/released record with output bytes");
  if (bytes.size() > colo_output_max_bytes)
    return bad("colo-output of " + std::to_string(bytes.size()) + " bytes (at most 64 KiB)");
  if (r.position > UINT64_MAX - bytes.size())
    return bad("colo-output position overflows");
  r.bytes.assign(bytes.begin(), bytes.end());
  return r;
}

caf::expected<uint64_t> decode_heartbeat(std::span<const uint8_t> p) {
  if (p.size() != heartbeat_size)
    return bad("heartbeat record of " + std::to_string(p.size()) + " bytes");
  return get<uint64_t>(p.data());
}

caf::expected<void> colo_exchange::take(const colo_record& r) {
  const colo_edge* edge = nullptr;
  for (const auto& e : edges)
    if (e.from == step_ && e.on == r.message)
      edge = &e;
  if (edge == nullptr)
    return bad(std::string{to_string(r.message)} + " out of turn (" +
               std::string{to_string(step_)} + ")");
  switch (r.message) {
    case m::checkpoint_ready:
      if (r.value != 0)
        return bad("checkpoint-ready with value " + std::to_string(r.value));
      break;
    case m::checkpoint_request:
      if (r.value != committed_ + 1)
        return bad("checkpoint-request for checkpoint " + std::to_string(r.value) +
                   " after checkpoint " + std::to_string(committed_));
      break;
    case m::vmstate_size:
      break; // a byte count, checked by the receiver against what arrived
    default:
      if (r.value != current_)
        return bad(std::string{to_string(r.message)} + " for checkpoint " +
                   std::to_string(r.value) + " during checkpoint " + std::to_string(current_));
  }
  step_ = edge->to;
  if (r.message == m::checkpoint_request) {
    current_ = r.value;
    announced_ = 0;
  } else if (r.message == m::vmstate_size) {
    announced_ = r.value;
  } else if (r.message == m::vmstate_loaded) {
    committed_ = current_;
  }
  return {};
}

} // namespace ferry::mig
