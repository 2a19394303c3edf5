// The serial port's output commit: held bytes reach the sink only up to the
// position released, in order, none twice; letting go releases the rest.
#include "agent/vmm/serial_port.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

using namespace ferry;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return {std::istreambuf_iterator<char>(in), {}};
}

} // namespace

TEST(serial_port, held_output_goes_out_only_up_to_the_released_position) {
  ferry::test::temp_dir tmp;
  const std::string path = tmp.path() + "/serial.txt";
  {
    serial_port s{std::fopen(path.c_str(), "w")};
    s.write_text("before\n");
    s.hold(true);
    s.write_text("pass 1\npa");
    const uint64_t checkpoint = s.bytes_written();
    s.write_text("ss 2\n");
    EXPECT_EQ(slurp(path), "before\n") << "nothing held reaches the sink";
    EXPECT_EQ(s.held_bytes(), 14U);
    s.release(checkpoint);
    EXPECT_EQ(slurp(path), "before\npass 1\npa") << "up to the position, mid-line too";
    s.release(checkpoint); // again: nothing twice
    s.release(3);          // an older position: nothing
    EXPECT_EQ(slurp(path), "before\npass 1\npa");
    s.write_text("pass 3\n");
    s.hold(false);
    EXPECT_EQ(slurp(path), "before\npass 1\npass 2\npass 3\n");
    EXPECT_EQ(s.held_bytes(), 0U);
    s.write_text("after\n");
  }
  EXPECT_EQ(slurp(path), "before\npass 1\npass 2\npass 3\nafter\n");
}

// COLO's compare mode: a secondary counts its output in the primary's
// positions, shows what it holds from a position on, and leaves out what a
// reader already saw from the primary.
TEST(serial_port, renumbered_output_is_compared_by_position_and_suppressed_before_a_point) {
  ferry::test::temp_dir tmp;
  const std::string path = tmp.path() + "/serial.txt";
  {
    serial_port s{std::fopen(path.c_str(), "w")};
    s.hold(true);
    s.write_text("old run");
    s.renumber(100); // a checkpoint whose output ended at 100
    EXPECT_EQ(s.held_bytes(), 0U) << "the rolled-back run's output is gone";
    s.write_text("pass 7\npass 8\n");
    EXPECT_EQ(s.bytes_written(), 114U);
    EXPECT_EQ(s.held_start(), 100U);
    EXPECT_EQ(s.held_from(107), "pass 8\n");
    EXPECT_EQ(s.held_from(90), "pass 7\npass 8\n") << "from where it holds";
    EXPECT_EQ(s.held_from(114), "");
    s.discard_held();
    EXPECT_EQ(s.held_from(100), "");
    s.write_text("pass 9\n");
    s.suppress_until(117); // the reader saw up to "pas" from the primary
    s.hold(false);
    s.write_text("pass 10\n");
  }
  EXPECT_EQ(slurp(path), "s 9\npass 10\n");
}
