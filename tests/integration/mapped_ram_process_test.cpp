// mapped-ram: `migrate` to a file: with the capability writes every page with
// data at its fixed offset (the file is about the size of RAM, holes where
// pages are zero), several threads at a time with multifd, while the guest
// runs: a page dirtied again is rewritten in place; an agent started
// with -incoming defer reads it back in parallel and the guest runs on,
// verified page by page. A file for another guest, or not a mapped-ram file,
// is refused before anything is read into the guest.

#include "tests/integration/migration_fixture.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>

using namespace ferry::test;

namespace {

class mapped_ram : public migration_fixture {
protected:
  // mapped-ram (and multifd with `channels` threads, if any) on `h`.
  static void enable(host& h, uint32_t channels) {
    json::array caps{json::object{{"capability", "mapped-ram"}, {"state", true}},
                     json::object{{"capability", "events"}, {"state", true}}};
    if (channels > 0)
      caps.push_back(json::object{{"capability", "multifd"}, {"state", true}});
    auto r = h.exec("migrate-set-capabilities", {{"capabilities", caps}});
    EXPECT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    if (channels > 0) {
      r = h.exec("migrate-set-parameters", {{"multifd-channels", channels}});
      EXPECT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    }
  }

  // The running source saved with mapped-ram into `file`; its stats.
  json::object save(const std::string& file, uint32_t channels) {
    start_pair("2048");
    enable(src, channels);
    auto r = src.exec("migrate", {{"uri", "file:" + file}});
    EXPECT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    EXPECT_EQ(src.wait_status({"completed", "failed"}, 60s), "completed")
      << json::serialize(src.info()) << src.agent->stderr_text();
    EXPECT_EQ(src.exec("query-status").at("return").at("status"), "postmigrate");
    return src.info();
  }

  // migrate-incoming of `file` on the waiting destination: its end status.
  std::string restore(const std::string& file, uint32_t channels) {
    enable(dst, channels);
    auto r = dst.exec("migrate-incoming", {{"uri", "file:" + file}, {"exit-on-error", false}});
    EXPECT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    return dst.wait_status({"completed", "failed"}, 60s);
  }

  std::string error_desc() { return std::string{dst.info().at("error-desc").as_string()}; }
};

TEST_F(mapped_ram, a_running_guest_is_saved_live_by_four_threads_and_read_back_by_four) {
  const std::string file = dir + "/guest.mapped";
  const auto info = save(file, 4);
  std::printf("mapped-ram save: %s\n", json::serialize(info).c_str());
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  const auto file_bytes = static_cast<uint64_t>(st.st_size);
  const auto allocated = static_cast<uint64_t>(st.st_blocks) * 512;
  std::printf("file %llu bytes, %llu allocated, RAM %llu\n",
              static_cast<unsigned long long>(file_bytes),
              static_cast<unsigned long long>(allocated), static_cast<unsigned long long>(bytes));
  EXPECT_GE(file_bytes, bytes) << "every page has its place";
  EXPECT_LT(file_bytes, bytes + (4u << 20)) << "and little else";
  // Live: the guest ran on through passes; every page was written or left
  // a hole at least once, the dirty ones again in place.
  EXPECT_GE(info.at("ram").at("dirty-sync-count").to_number<uint64_t>(), 2U);
  EXPECT_GT(info.at("ram").at("normal").to_number<uint64_t>(), 40000U);
  EXPECT_GE(info.at("ram").at("normal").to_number<uint64_t>() +
              info.at("ram").at("duplicate").to_number<uint64_t>(),
            bytes / 4096);
  EXPECT_LE(allocated + (1u << 20), bytes) << "zero stretches are holes";
  ASSERT_EQ(restore(file, 4), "completed")
    << json::serialize(dst.info()) << dst.agent->stderr_text();
  expect_destination_runs_on("65280");
}

TEST_F(mapped_ram, one_thread_without_multifd_and_holes_where_pages_are_zero) {
  const std::string file = dir + "/guest.mapped";
  const auto info = save(file, 0);
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  // The pattern leaves 256 pages zero (the boot area): holes, not data.
  EXPECT_GE(info.at("ram").at("duplicate").to_number<uint64_t>(), 1U) << json::serialize(info);
  ASSERT_EQ(restore(file, 0), "completed")
    << json::serialize(dst.info()) << dst.agent->stderr_text();
  expect_destination_runs_on("65280");
}

TEST_F(mapped_ram, a_file_for_another_guest_or_no_mapped_ram_file_is_refused_untouched) {
  const std::string file = dir + "/guest.mapped";
  save(file, 2);
  // The same file for a guest of another size: refused, the guest never runs.
  const std::string plain = dir + "/guest.stream";
  {
    // A stream saved without the capability, where a mapped-ram file belongs.
    auto r = src.exec(
      "migrate-set-capabilities",
      {{"capabilities", json::array{json::object{{"capability", "mapped-ram"}, {"state", false}},
                                    json::object{{"capability", "multifd"}, {"state", false}}}}});
    ASSERT_TRUE(r.as_object().contains("return"));
    ASSERT_TRUE(src.exec("cont").as_object().contains("return"));
    r = src.exec("migrate", {{"uri", "file:" + plain}});
    ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    ASSERT_EQ(src.wait_status({"completed", "failed"}, 60s), "completed");
  }
  ASSERT_EQ(restore(plain, 2), "failed");
  EXPECT_NE(error_desc().find("no mapped-ram header"), std::string::npos) << error_desc();
  EXPECT_NE(dst.exec("query-status").at("return").at("status"), "running");
  // A damaged header.
  const std::string damaged = dir + "/damaged.mapped";
  std::filesystem::copy_file(file, damaged);
  {
    std::FILE* f = std::fopen(damaged.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, 20, SEEK_SET);
    std::fputc(0x7f, f);
    std::fclose(f);
  }
  ASSERT_TRUE(dst.exec("quit").as_object().contains("return"));
  dst.agent->wait(10s);
  start(dst, {"-incoming", "defer"});
  ASSERT_EQ(restore(damaged, 2), "failed");
  EXPECT_NE(error_desc().find("checksum"), std::string::npos) << error_desc();
  // A guest of another size.
  ASSERT_TRUE(dst.exec("quit").as_object().contains("return"));
  dst.agent->wait(10s);
  size = "128M";
  start(dst, {"-incoming", "defer"});
  ASSERT_EQ(restore(file, 2), "failed");
  EXPECT_NE(error_desc().find("this guest has 134217728"), std::string::npos) << error_desc();
  EXPECT_NE(dst.exec("query-status").at("return").at("status"), "running");
}

TEST_F(mapped_ram, needs_a_file_uri) {
  start_pair("2048");
  enable(src, 2);
  auto r = src.exec("migrate", {{"uri", "unix:" + dir + "/x.sock"}});
  ASSERT_TRUE(r.as_object().contains("error")) << json::serialize(r);
  EXPECT_NE(std::string{r.at("error").at("desc").as_string()}.find("mapped-ram needs a file: URI"),
            std::string::npos)
    << json::serialize(r);
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "running");
}

} // namespace
