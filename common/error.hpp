#pragma once
// Errors every layer uses: the common codes (bad argument, failed system call,
// missing KVM, bad state blob, wrong run state), `describe()` and FERRY_TRY.
// Values are pinned: they travel inside caf::error and must never be reused.

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>

#include <cstdint>
#include <string>

namespace ferry {

enum class errc : uint8_t {
  // A caller (command line, QMP, test) asked for something malformed.
  invalid_argument = 1,
  // A system call failed; the message names the call and errno text.
  system_error = 2,
  // /dev/kvm is missing or not usable by this process.
  kvm_unavailable = 3,
  // The kernel lacks a KVM capability the requested feature needs.
  not_supported = 4,
  // A saved state blob is truncated, of an unknown version, or inconsistent.
  bad_state_blob = 5,
  // The operation does not fit the guest's current run state.
  bad_run_state = 6,
  // A disk image is malformed, or uses a feature Ferry does not read.
  bad_image = 7,
};

// The error with a human-readable description as its context.
caf::error make_ferry_error(errc code, std::string desc);

// `what` failed with the current errno: "<what>: <strerror(errno)>".
caf::error make_system_error(const std::string& what);

// The human-readable description carried by an error made above (or CAF's
// rendering for any other error).
std::string describe(const caf::error& err);

} // namespace ferry

// Declares `var` from a caf::expected, or returns its error from the caller.
#define FERRY_TRY(var, expr)                                                                       \
  auto var##_res = (expr);                                                                         \
  if (!var##_res)                                                                                  \
    return var##_res.error();                                                                      \
  auto var = std::move(*var##_res)

// Returns the error of a caf::expected<void> (or any expected) from the caller.
#define FERRY_TRY_VOID(expr)                                                                       \
  do {                                                                                             \
    auto ferry_try_res_ = (expr);                                                                  \
    if (!ferry_try_res_)                                                                           \
      return ferry_try_res_.error();                                                               \
  } while (0)

CAF_ERROR_CODE_ENUM(ferry::errc, "ferry")
