#include "agent/migration/page_sender.hpp"

#include "common/error.hpp"
#include "protocol/xbzrle.hpp"

#include <cstring>

namespace ferry {

namespace {
constexpr size_t queue_limit = 8;

// Neighbouring pages of guest RAM leave as one piece.
void add_span(std::vector<iovec>& spans, const uint8_t* page) {
  auto* base = const_cast<uint8_t*>(page);
  if (!spans.empty() && static_cast<uint8_t*>(spans.back().iov_base) + spans.back().iov_len == base)
    spans.back().iov_len += mig::page_size;
  else
    spans.push_back({base, mig::page_size});
}
} // namespace

page_sender::page_sender(const std::string& name, migration_channel& ch, const guest_memory& mem,
                         options opt, rate_limiter& limiter, migration_counters& counters,
                         std::atomic<bool>& stop, std::function<void(const caf::error&)> on_error)
  : ch_(ch), mem_(mem), opt_(opt), limiter_(limiter), counters_(counters), stop_(stop),
    on_error_(std::move(on_error)) {
  // The worker names the thread; the registry learns it too (throttling
  // and tests find migration threads there).
  worker_.start(name, [this, name] {
    const auto registered = name_migration_thread(opt_.threads, name);
    run();
  });
}

// Queued batches still go out: stop() only ends the loop once it is idle.
page_sender::~page_sender() {
  worker_.stop();
}

void page_sender::push(job j) {
  std::unique_lock lk{mtx_};
  // Woken when the worker takes a batch; stop_ is set by another thread
  // without our lock, so it is polled as well.
  while (queue_.size() >= queue_limit && !stop_)
    worker_.wait_for(lk, std::chrono::milliseconds(20),
                     [&] { return queue_.size() < queue_limit || stop_; });
  if (stop_)
    return;
  queue_.push_back(std::move(j));
  worker_.wake();
}

void page_sender::push_pages(std::vector<uint64_t> pfns) {
  push(job{job::kind::pages, std::move(pfns), 0});
}

void page_sender::push_sync(uint64_t pass) {
  push(job{job::kind::sync, {}, pass});
}

void page_sender::push_end() {
  push(job{job::kind::end, {}, 0});
}

void page_sender::wait_idle() {
  std::unique_lock lk{mtx_};
  // Woken when the worker finishes a batch; stop_ is polled (see push).
  const auto idle = [&] { return (queue_.empty() && !busy_) || stop_; };
  while (!idle())
    worker_.wait_for(lk, std::chrono::milliseconds(20), idle);
}

void page_sender::run() {
  for (;;) {
    job j;
    {
      std::unique_lock lk{mtx_};
      worker_.wait_for(lk, std::chrono::milliseconds(50), [&] { return !queue_.empty(); });
      if (queue_.empty()) {
        if (worker_.stopping())
          return;
        continue;
      }
      j = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    worker_.wake(); // room in the queue
    caf::expected<void> ok{};
    if (!stop_) {
      if (j.what == job::kind::pages) {
        ok = opt_.zero_copy ? send_live(j.pfns) : send_pages(j.pfns);
      } else if (j.what == job::kind::sync) {
        const auto p = mig::encode_sync(j.pass);
        ok = flush_live();
        if (ok)
          ok = ch_.send(mig::record_type::sync, p);
      } else {
        ok = flush_live();
        if (ok)
          ok = ch_.send(mig::record_type::end, std::span<const uint8_t>{});
      }
    }
    if (!ok)
      on_error_(ok.error());
    {
      std::lock_guard lk{mtx_};
      busy_ = false;
    }
    worker_.wake(); // wait_idle() may be done
  }
}

void page_sender::use_xbzrle(uint64_t bytes) {
  if (opt_.xbzrle_cache == 0)
    return;
  if (!cache_ || cache_bytes_ != bytes) {
    cache_ = std::make_unique<xbzrle_cache>(bytes);
    cache_bytes_ = bytes;
  }
}

page_sender::xbzrle_outcome page_sender::xbzrle_page(uint64_t pfn, const uint8_t* page) {
  counters_.xbzrle_checked.fetch_add(1, std::memory_order_relaxed);
  uint8_t* cached = cache_->find(pfn);
  if (cached == nullptr) {
    counters_.xbzrle_cache_miss.fetch_add(1, std::memory_order_relaxed);
    cache_->insert(pfn, page);
    return xbzrle_outcome::whole;
  }
  // A delta that saves less than its entry header is not worth it.
  delta_.resize(mig::page_size - 16);
  const long n = mig::xbzrle::encode({cached, mig::page_size}, {page, mig::page_size}, delta_);
  // Either way the destination's copy becomes this snapshot.
  std::memcpy(cached, page, mig::page_size);
  if (n < 0) {
    counters_.xbzrle_overflow.fetch_add(1, std::memory_order_relaxed);
    return xbzrle_outcome::whole;
  }
  if (n == 0)
    return xbzrle_outcome::unchanged; // dirtied, but written back the same
  mig::append_xbzrle(deltas_, pfn, {delta_.data(), static_cast<size_t>(n)});
  ++delta_count_;
  return xbzrle_outcome::delta;
}

caf::expected<void> page_sender::send_pages(const std::vector<uint64_t>& pfns) {
  const uint8_t* ram = mem_.data();
  // The page data leaves straight from guest RAM: nothing on the wire needs
  // it to hold still (a plain record's CRC leaves page data to the
  // switchover digest, a compressed record's covers the compressed copy, a
  // TLS record's tag whatever was sealed). A page the guest writes while it
  // leaves is dirty again and goes in a later pass, replacing its digest
  // entry on both sides. Only XBZRLE snapshots: its cache must hold exactly
  // what went out.
  const bool in_place = cache_ == nullptr;
  entries_.resize(pfns.size());
  if (!in_place)
    data_.resize(pfns.size() * mig::page_size);
  spans_.clear();
  size_t with_data = 0;
  uint32_t zeros = 0;
  size_t n_entries = 0;
  if (cache_) {
    mig::begin_xbzrle(deltas_);
    delta_count_ = 0;
  }
  for (size_t i = 0; i < pfns.size(); ++i) {
    const uint8_t* src = ram + pfns[i] * mig::page_size;
    // A page that turns non-zero after this check was written after the
    // last dirty sync: the next sync reports it and it is sent again.
    const bool zero = (known_zero_ != nullptr && known_zero_->test(pfns[i])) ||
                      (opt_.detect_zero && mig::is_zero_page(src));
    if (zero) {
      if (cache_ != nullptr)
        if (uint8_t* cached = cache_->find(pfns[i]); cached != nullptr)
          std::memset(cached, 0, mig::page_size);
      entries_[n_entries++] = pfns[i] | mig::zero_page_bit;
      ++zeros;
      if (opt_.digest != nullptr)
        opt_.digest->set(pfns[i], mig::zero_page_hash());
      continue;
    }
    if (in_place) {
      if (opt_.digest != nullptr)
        opt_.digest->set(pfns[i], mig::page_hash(src));
      add_span(spans_, src);
      entries_[n_entries++] = pfns[i];
      ++with_data;
      continue;
    }
    uint8_t* snapshot = data_.data() + with_data * mig::page_size;
    std::memcpy(snapshot, src, mig::page_size);
    // What goes out is the snapshot (whole or as a delta; an unchanged
    // page's content, and contribution, stay as they were).
    if (opt_.digest != nullptr)
      opt_.digest->set(pfns[i], mig::page_hash(snapshot));
    if (cache_ != nullptr && xbzrle_page(pfns[i], snapshot) != xbzrle_outcome::whole)
      continue;
    entries_[n_entries++] = pfns[i];
    ++with_data;
  }
  if (delta_count_ != 0) {
    mig::finish_xbzrle(deltas_, delta_count_);
    const uint64_t bytes = mig::header_size + deltas_.size();
    limiter_.acquire(bytes, stop_, &ch_.interrupted_flag());
    if (auto ok = ch_.send(mig::record_type::xbzrle_pages, deltas_); !ok)
      return ok;
    counters_.xbzrle_pages.fetch_add(delta_count_, std::memory_order_relaxed);
    counters_.xbzrle_bytes.fetch_add(bytes, std::memory_order_relaxed);
    counters_.add_sent(bytes, opt_.multifd);
    delta_count_ = 0;
  }
  if (n_entries == 0)
    return {};
  if (!in_place && with_data != 0)
    spans_.push_back({data_.data(), with_data * mig::page_size});
  mig::page_batch_parts batch;
  mig::encode_pages(batch, {entries_.data(), n_entries}, {});
  parts_.assign(batch.parts.begin(), batch.parts.begin() + 2); // prefix, entries
  parts_.insert(parts_.end(), spans_.begin(), spans_.end());
  uint64_t bytes = mig::header_size + batch.size() + with_data * mig::page_size;
  if (opt_.compress != mig::compression::none) {
    mig::flatten(parts_, plain_);
    if (auto ok = mig::compress_pages(opt_.compress, opt_.level, plain_, compressed_); !ok)
      return ok;
    bytes = mig::header_size + compressed_.size();
    limiter_.acquire(bytes, stop_, &ch_.interrupted_flag());
    if (auto ok = ch_.send(mig::record_type::compressed_pages, compressed_); !ok)
      return ok;
  } else {
    limiter_.acquire(bytes, stop_, &ch_.interrupted_flag());
    if (auto ok = ch_.send(mig::record_type::pages, parts_, 2 /* the pages */); !ok)
      return ok;
  }
  counters_.normal_pages.fetch_add(with_data, std::memory_order_relaxed);
  counters_.zero_pages.fetch_add(zeros, std::memory_order_relaxed);
  counters_.add_sent(bytes, opt_.multifd);
  return {};
}

// QEMU's zero-copy-send: no snapshot and no checksum (the guest may write a
// page while the kernel reads it; such a page is dirty again and goes in a
// later pass, replacing its digest entry on both sides).
caf::expected<void> page_sender::send_live(const std::vector<uint64_t>& pfns) {
  const uint8_t* ram = mem_.data();
  entries_.resize(pfns.size());
  live_.clear();
  uint32_t zeros = 0;
  size_t with_data = 0;
  for (size_t i = 0; i < pfns.size(); ++i) {
    const uint8_t* src = ram + pfns[i] * mig::page_size;
    const bool zero = (known_zero_ != nullptr && known_zero_->test(pfns[i])) ||
                      (opt_.detect_zero && mig::is_zero_page(src));
    if (zero) {
      entries_[i] = pfns[i] | mig::zero_page_bit;
      ++zeros;
      if (opt_.digest != nullptr)
        opt_.digest->set(pfns[i], mig::zero_page_hash());
      continue;
    }
    entries_[i] = pfns[i];
    ++with_data;
    if (opt_.digest != nullptr)
      opt_.digest->set(pfns[i], mig::page_hash(src));
    add_span(live_, src);
  }
  if (pfns.empty())
    return {};
  mig::page_batch_parts batch;
  mig::encode_pages(batch, {entries_.data(), pfns.size()}, {});
  const uint64_t bytes = mig::header_size + batch.size() + with_data * mig::page_size;
  limiter_.acquire(bytes, stop_, &ch_.interrupted_flag());
  if (auto ok = ch_.send_live({batch.parts.data(), 2}, live_); !ok)
    return ok;
  live_pending_ = true;
  counters_.normal_pages.fetch_add(with_data, std::memory_order_relaxed);
  counters_.zero_pages.fetch_add(zeros, std::memory_order_relaxed);
  counters_.add_sent(bytes, opt_.multifd);
  return {};
}

caf::expected<void> page_sender::flush_live() {
  if (!live_pending_)
    return {};
  live_pending_ = false;
  FERRY_TRY(copied, ch_.flush_zero_copy());
  if (copied)
    counters_.missed_zero_copy.fetch_add(1, std::memory_order_relaxed);
  return {};
}

} // namespace ferry
