#pragma once
// Writes a memory image pre-filled with the test pattern, for
// `-object memory-backend-file,mem-path=...`: the fast way to make a big guest
// whose RAM the test guest recognises and does not fill itself. Zero-class
// pages are left as holes, so the file is sparse.

#include "agent/testguest/guest_image.hpp"
#include "agent/testguest/pattern.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <span>
#include <string>

namespace ferry::testguest {

// Creates (or truncates) `path` as a `size`-byte image with the pattern, and
// the boot sector `image` at 0x7c00 when given.
caf::expected<void> write_pattern_file(const std::string& path, uint64_t size,
                                       const guest_params& p, std::span<const uint8_t> image = {});

} // namespace ferry::testguest
