#pragma once
// A guest's disks, as -drive and -blockdev name them: opened once at start
// (qcow2 read-write when the file allows it), looked up by node name by the
// snapshot commands. The first device's sector 0 is the boot sector.

#include "agent/block/qcow2_image.hpp"

#include <caf/expected.hpp>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ferry {

struct block_device_spec {
  std::string node_name; // what QMP commands name it by
  std::string format;    // "raw", "qcow2", or "" (probed, as -drive without format=)
  std::string path;
  bool read_only = false;
};

class block_devices {
public:
  struct device {
    block_device_spec spec; // format probed when it was ""
    std::unique_ptr<qcow2::image> qcow2;
    std::string read_only_why; // why a qcow2 device was opened read-only, if it was
  };

  static caf::expected<std::unique_ptr<block_devices>>
  open(const std::vector<block_device_spec>& specs);

  caf::expected<std::vector<uint8_t>> boot_sector() const;
  device* find(const std::string& node_name);
  std::vector<device>& all() { return devices_; }
  // Held by whoever reads or changes an image (one snapshot job at a time).
  std::mutex& lock() { return mtx_; }

private:
  std::vector<device> devices_;
  std::mutex mtx_;
};

} // namespace ferry
