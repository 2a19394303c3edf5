#pragma once
// -drive and -blockdev in QEMU's syntax, gathered into a guest's disks:
//   -drive file=PATH[,format=raw|qcow2][,node-name=N][,if=,index=,media=,id=,...]
//   -blockdev driver=qcow2|raw,node-name=N,file.driver=file,file.filename=PATH
//   -blockdev driver=file,node-name=F,filename=PATH
//     -blockdev driver=qcow2,node-name=N,file=F        (libvirt's two levels)
//   -blockdev '{"driver":"qcow2","node-name":"N","file":{...}}'  (JSON)
// A file node no format node refers to is a raw disk. Disks keep the order
// of the command line; the first one boots.

#include "agent/block/block_devices.hpp"

#include <caf/expected.hpp>

#include <string>
#include <vector>

namespace ferry {

class block_args {
public:
  caf::expected<void> drive(const std::string& value);
  caf::expected<void> blockdev(const std::string& value);
  caf::expected<std::vector<block_device_spec>> finish() const;

private:
  struct node {
    std::string name;
    std::string driver; // file, raw, qcow2
    std::string path;   // file nodes, and format nodes given file.filename
    std::string file;   // a format node's file node, by name
    bool read_only = false;
  };
  caf::expected<void> add(node n);
  std::vector<node> nodes_;
  int unnamed_ = 0;
};

} // namespace ferry
