#pragma once
// The page hash's builds (page_digest.cpp picks one per CPU). Both compute
// XXH3-64 of the page; they differ only in vector width, and the digest
// depends on them agreeing (tests/protocol/page_digest_test.cpp).

#include <cstddef>
#include <cstdint>

namespace ferry::mig::detail {

inline constexpr size_t hashed_page_bytes = 4096;

// SSE2 on x86-64 (every such CPU has it), scalar elsewhere.
uint64_t page_hash_baseline(const uint8_t* page);
#if defined(__x86_64__)
// Compiled for AVX2; call only where the CPU has it.
uint64_t page_hash_avx2(const uint8_t* page);
#endif

} // namespace ferry::mig::detail
