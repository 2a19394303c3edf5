#pragma once
// The records of a COLO pair (docs/migration-stream.md, "COLO"): once the
// secondary holds the first whole copy of the guest, the primary sends a
// checkpoint every x-checkpoint-delay ms, and both sides send heartbeats.
// One record type carries QEMU's COLOMessage sequence; `colo_exchange`
// holds one side to that sequence, so a message out of turn or naming the
// wrong checkpoint fails the pair cleanly instead of staging garbage.
//
//   colo:       u32 message (COLOMessage, QEMU's numbering), u32 reserved
//               (0), u64 value — the checkpoint's number, or for
//               vmstate-size the pages the checkpoint carried
//   heartbeat:  u64 sequence, either way, whenever the link is otherwise quiet
//
// A checkpoint N on the main channel, primary (P) and secondary (S):
//   S: checkpoint-ready (0)          once, after the first full copy loaded
//   P: checkpoint-request N          N = 1, 2, ...: the guest paused
//   S: checkpoint-reply N            staging area emptied for N
//   P: vmstate-send N                then pages, cpu-state, devices records
//   P: vmstate-size P                P: the pages those records carried
//   S: vmstate-received N            all of N staged
//   S: vmstate-loaded N              N committed whole: the secondary's copy
//
// Either side ends COLO with an abort record (status_msg): code 1 — this
// side ends COLO and the other runs the guest; code 2 (secondary only) —
// the secondary took over and runs the guest: the primary must stop its.

#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace ferry::mig {

enum class colo_message : uint32_t {
  checkpoint_ready = 0,
  checkpoint_request = 1,
  checkpoint_reply = 2,
  vmstate_send = 3,
  vmstate_size = 4,
  vmstate_received = 5,
  vmstate_loaded = 6,
};
inline constexpr uint32_t colo_message_count = 7;
// QEMU's spelling (COLOMessage).
std::string_view to_string(colo_message m);

struct colo_record {
  colo_message message = colo_message::checkpoint_ready;
  uint64_t value = 0;
};
inline constexpr size_t colo_record_size = 16;
std::vector<uint8_t> encode(const colo_record& r);
caf::expected<colo_record> decode_colo(std::span<const uint8_t> payload);

inline constexpr uint32_t colo_abort_ended = 1;
inline constexpr uint32_t colo_abort_took_over = 2;

inline constexpr size_t heartbeat_size = 8;
// A side that has sent nothing else for this long sends a heartbeat.
inline constexpr std::chrono::milliseconds colo_heartbeat_interval{100};
// A peer not heard from for this long is silent: heartbeats to it stop
// until it is heard again (a silent link must never fill the send buffer
// and block the side that sends).
inline constexpr std::chrono::milliseconds colo_silent_after{1000};
std::vector<uint8_t> encode_heartbeat(uint64_t sequence);
caf::expected<uint64_t> decode_heartbeat(std::span<const uint8_t> payload);

// COLO's compare mode (the secondary runs from each checkpoint too and the
// two outputs are compared): the secondary's serial output, and positions
// the primary tells it. Positions count the primary's serial bytes.
//   colo-output: u32 kind, u32 0, u64 checkpoint, u64 position, then bytes
//     output    S -> P  the secondary's bytes at `position`, produced since
//                       it resumed from `checkpoint` (at most 64 KiB)
//     base      P -> S  checkpoint `checkpoint` ends the primary's output at
//                       `position` (sent within the checkpoint)
//     released  P -> S  a reader has seen the primary's output up to
//                       `position` (both copies agreed on it)
enum class colo_output_kind : uint32_t { output = 0, base = 1, released = 2 };
struct colo_output_record {
  colo_output_kind kind = colo_output_kind::output;
  uint64_t checkpoint = 0;
  uint64_t position = 0;
  std::vector<uint8_t> bytes; // output only
};
inline constexpr size_t colo_output_head = 24;
inline constexpr size_t colo_output_max_bytes = size_t{64} << 10;
std::vector<uint8_t> encode(const colo_output_record& r);
caf::expected<colo_output_record> decode_colo_output(std::span<const uint8_t> payload);

// Where one side stands in the checkpoint sequence. Both sides run the same
// machine over every message, sent or received.
enum class colo_step : uint8_t {
  loading,   // before checkpoint-ready
  idle,      // between checkpoints
  requested, // checkpoint-request seen
  replied,   // checkpoint-reply seen
  sending,   // vmstate-send seen: the checkpoint's records flow
  sized,     // vmstate-size seen
  received,  // vmstate-received seen
};
inline constexpr size_t colo_step_count = 7;
std::string_view to_string(colo_step s);

// The one message each step accepts and the step it leads to (the table the
// exchange walks; exposed for the test that walks every edge).
struct colo_edge {
  colo_step from;
  colo_message on;
  colo_step to;
};
std::span<const colo_edge> colo_edges();

class colo_exchange {
public:
  // Takes the next message, checking its turn and its checkpoint number:
  // a request names the checkpoint after the last one committed, every
  // later message of the checkpoint names it again. The step does not move
  // on a refusal.
  caf::expected<void> take(const colo_record& r);
  colo_step step() const { return step_; }
  // The checkpoint in flight (0 before the first request).
  uint64_t checkpoint() const { return current_; }
  // The last checkpoint both sides hold whole (0: only the first full copy).
  uint64_t committed() const { return committed_; }
  // vmstate-size's figure (pages) for the checkpoint in flight.
  uint64_t announced_bytes() const { return announced_; }

private:
  colo_step step_ = colo_step::loading;
  uint64_t current_ = 0;
  uint64_t committed_ = 0;
  uint64_t announced_ = 0;
};

} // namespace ferry::mig
