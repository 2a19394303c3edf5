// Built with -mavx2 (protocol/CMakeLists.txt), so xxhash.h's inline XXH3
// takes its 256-bit path; page_digest.cpp calls it only on CPUs with AVX2.
#include "protocol/page_hash_variants.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace ferry::mig::detail {

uint64_t page_hash_avx2(const uint8_t* page) {
  return XXH3_64bits(page, hashed_page_bytes);
}

} // namespace ferry::mig::detail
