#pragma once
// Whole reads and writes at a file offset: a short transfer goes on where it
// stopped, EINTR is retried, and a file that ends first is an error naming
// `what` (the file's role, for the message).

#include <caf/expected.hpp>

#include <cstddef>
#include <cstdint>

namespace ferry {

caf::expected<void> pread_full(int fd, uint8_t* p, size_t n, uint64_t at, const char* what);
caf::expected<void> pwrite_full(int fd, const uint8_t* p, size_t n, uint64_t at, const char* what);

} // namespace ferry
