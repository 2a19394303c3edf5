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
