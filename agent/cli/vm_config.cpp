#include "agent/cli/vm_config.hpp"

#include "agent/cli/block_args.hpp"
#include "agent/cli/qemu_opts.hpp"
#include "agent/vmm/memory_layout.hpp"
#include "common/error.hpp"

#include <map>
#include <set>

namespace ferry {

namespace {

caf::error invalid(const std::string& desc) {
  return make_ferry_error(errc::invalid_argument, desc);
}

struct backend_object {
  memory_backend backend;
};

} // namespace

caf::expected<endpoint> parse_endpoint(const std::string& text) {
  FERRY_TRY(opts, qemu_opts::parse(text, "addr"));
  if (auto ok = opts.only({"addr", "server", "wait", "nowait"}); !ok)
    return ok.error();
  FERRY_TRY(server, opts.get_bool("server", false));
  FERRY_TRY(wait, opts.get_bool("wait", true));
  if (opts.has("nowait"))
    wait = false;
  if (!server || wait)
    return invalid("'" + text + "': only server=on,wait=off endpoints are supported");
  const auto given = opts.get("addr");
  if (!given || given->empty())
    return invalid("'" + text + "': no address (unix:PATH or tcp:HOST:PORT)");
  const std::string& addr = *given;
  endpoint ep;
  if (addr.rfind("unix:", 0) == 0) {
    ep.type = endpoint::kind::unix_socket;
    ep.path = addr.substr(5);
    if (ep.path.empty())
      return invalid("'" + text + "': unix socket path is empty");
    return ep;
  }
  if (addr.rfind("tcp:", 0) == 0) {
    const std::string rest = addr.substr(4);
    const auto colon = rest.rfind(':');
    if (colon == std::string::npos)
      return invalid("'" + text + "': expected tcp:HOST:PORT");
    ep.type = endpoint::kind::tcp;
    ep.host = rest.substr(0, colon);
    if (ep.host.empty())
      ep.host = "127.0.0.1";
    FERRY_TRY(port, parse_uint(rest.substr(colon + 1)));
    if (port > 65535)
      return invalid("'" + text + "': port out of range");
    ep.port = static_cast<uint16_t>(port);
    return ep;
  }
  return invalid("'" + text + "': expected unix:PATH or tcp:HOST:PORT");
}

namespace {

// The flags' parsing state: what one flag sets, and what later checks
// (-machine memory-backend= against the -object list, -m against its size)
// need from the others.
struct vm_args_parser {
  vm_config cfg;
  block_args blocks;
  std::map<std::string, memory_backend> backends;
  std::set<std::string> object_ids;
  std::optional<std::string> machine_backend;
  bool ram_size_given = false;

  caf::expected<void> name(const std::string& v) {
    FERRY_TRY(o, qemu_opts::parse(v, "guest"));
    if (auto ok = o.only({"guest", "process", "debug-threads"}); !ok)
      return ok.error();
    cfg.name = o.get("guest").value_or("");
    return {};
  }

  caf::expected<void> uuid(const std::string& v) {
    if (v.size() != 36 || v[8] != '-' || v[13] != '-' || v[18] != '-' || v[23] != '-')
      return invalid("Fail to parse UUID string '" + v + "'");
    cfg.uuid = v;
    return {};
  }

  caf::expected<void> memory(const std::string& v) {
    FERRY_TRY(o, qemu_opts::parse(v, "size"));
    if (auto ok = o.only({"size", "slots", "maxmem"}); !ok)
      return ok.error();
    FERRY_TRY(sz, parse_size(o.get("size").value_or(""), 1u << 20));
    cfg.ram_size = sz;
    ram_size_given = true;
    return {};
  }

  caf::expected<void> smp(const std::string& v) {
    FERRY_TRY(o, qemu_opts::parse(v, "cpus"));
    if (auto ok = o.only({"cpus", "sockets", "cores", "threads", "maxcpus"}); !ok)
      return ok.error();
    FERRY_TRY(n, o.get_uint("cpus", 1));
    if (n == 0 || n > 64)
      return invalid("-smp: cpus must be between 1 and 64");
    cfg.smp = static_cast<uint32_t>(n);
    return {};
  }

  caf::expected<void> drive(const std::string& v) { return blocks.drive(v); }
  caf::expected<void> blockdev(const std::string& v) { return blocks.blockdev(v); }

  // -object tls-creds-x509 / authz-simple / memory-backend-ram|memfd|file.
  caf::expected<void> object(const std::string& v) {
    FERRY_TRY(o, qemu_opts::parse(v, "qom-type"));
    const std::string type = o.get("qom-type").value_or("");
    if (type == "tls-creds-x509" || type == "authz-simple") {
      if (!o.has("id"))
        return invalid("-object " + type + ": Parameter 'id' is missing");
      const std::string id = *o.get("id");
      if (!object_ids.insert(id).second)
        return invalid("-object: duplicate ID '" + id + "'");
      if (type == "authz-simple") {
        if (auto ok = o.only({"qom-type", "id", "identity"}); !ok)
          return ok.error();
        cfg.authz.push_back({id, o.get("identity").value_or("")});
        return {};
      }
      if (auto ok = o.only({"qom-type", "id", "dir", "endpoint", "verify-peer", "sanity-check",
                            "priority", "loaded"});
          !ok)
        return ok.error();
      tls_creds_object t;
      t.id = id;
      t.dir = o.get("dir").value_or("");
      if (t.dir.empty())
        return invalid("-object tls-creds-x509: property 'dir' is required");
      const std::string ep = o.get("endpoint").value_or("client");
      if (ep != "client" && ep != "server")
        return invalid("-object tls-creds-x509: Parameter 'endpoint' does not accept value '" + ep +
                       "'");
      t.server = ep == "server";
      FERRY_TRY(vp, o.get_bool("verify-peer", true));
      t.verify_peer = vp;
      cfg.tls_creds.push_back(std::move(t));
      return {};
    }
    if (type == "x-ferry-colo")
      return colo_object(o);
    if (type != "memory-backend-ram" && type != "memory-backend-file" &&
        type != "memory-backend-memfd")
      return invalid("-object: type '" + type + "' is not supported yet");
    if (type == "memory-backend-memfd") {
      if (auto ok = o.only({"qom-type", "id", "size", "share", "prealloc", "merge", "dump",
                            "hugetlb", "hugetlbsize", "seal"});
          !ok)
        return ok.error();
    } else if (auto ok = o.only(
                 {"qom-type", "id", "size", "mem-path", "share", "prealloc", "merge", "dump"});
               !ok) {
      return ok.error();
    }
    if (!o.has("id"))
      return invalid("-object " + type + ": Parameter 'id' is missing");
    if (!o.has("size"))
      return invalid("-object " + type + ": property 'size' is required");
    memory_backend b;
    FERRY_TRY(sz, o.get_size("size", 0));
    b.size = sz;
    if (type == "memory-backend-file") {
      b.type = memory_backend::kind::file;
      if (!o.has("mem-path"))
        return invalid("-object memory-backend-file: property 'mem-path' is required");
      b.mem_path = *o.get("mem-path");
      FERRY_TRY(share, o.get_bool("share", false));
      b.share = share;
    } else if (o.has("mem-path")) {
      return invalid("-object memory-backend-ram: Invalid parameter 'mem-path'");
    } else if (type == "memory-backend-memfd") {
      b.memfd = true;
      if (auto ok = huge_pages(o, b); !ok)
        return ok.error();
    }
    const std::string id = *o.get("id");
    if (!object_ids.insert(id).second)
      return invalid("-object: duplicate ID '" + id + "'");
    backends[id] = std::move(b);
    return {};
  }

  // memory-backend-memfd's hugetlb=on[,hugetlbsize=SIZE]: a power of two the
  // kernel must offer (checked when the memfd is made).
  static caf::expected<void> huge_pages(const qemu_opts& o, memory_backend& b) {
    FERRY_TRY(huge, o.get_bool("hugetlb", false));
    FERRY_TRY(huge_size, o.get_size("hugetlbsize", 0));
    if (huge_size != 0 && !huge)
      return invalid("-object memory-backend-memfd: 'hugetlbsize' needs hugetlb=on");
    if (huge_size != 0 && ((huge_size & (huge_size - 1)) != 0 || huge_size < (uint64_t{64} << 10)))
      return invalid("-object memory-backend-memfd: hugetlbsize must be a power of two of at "
                     "least 64K");
    b.hugetlb = huge;
    b.hugetlb_size = huge_size;
    return {};
  }

  caf::expected<void> colo_object(const qemu_opts& o) {
    if (auto ok = o.only({"qom-type", "id", "fence-timeout", "output"}); !ok)
      return ok.error();
    if (!o.has("id"))
      return invalid("-object x-ferry-colo: Parameter 'id' is missing");
    if (!object_ids.insert(*o.get("id")).second)
      return invalid("-object: duplicate ID '" + *o.get("id") + "'");
    FERRY_TRY(ms, o.get_uint("fence-timeout", 0));
    if (ms > 3'600'000)
      return invalid("-object x-ferry-colo: fence-timeout must be at most 3600000 ms");
    cfg.colo_fence_ms = ms;
    const std::string output = o.get("output").value_or("checkpoint");
    if (output != "checkpoint" && output != "compare")
      return invalid("-object x-ferry-colo: output must be 'checkpoint' or 'compare', not '" +
                     output + "'");
    cfg.colo_compare = output == "compare";
    return {};
  }

  caf::expected<void> machine(const std::string& v) {
    FERRY_TRY(o, qemu_opts::parse(v, "type"));
    if (auto ok = o.only({"type", "accel", "memory-backend"}); !ok)
      return ok.error();
    if (auto t = o.get("type"); t && *t != "pc" && *t != "q35" && *t != "none" && *t != "microvm")
      return invalid("-machine: unknown machine type '" + *t + "'");
    if (auto mb = o.get("memory-backend"))
      machine_backend = *mb;
    if (auto a = o.get("accel")) {
      if (*a == "kvm")
        cfg.accel = vm_config::accel_kind::kvm;
      else if (*a == "none")
        cfg.accel = vm_config::accel_kind::none;
      else
        return invalid("-machine accel='" + *a + "' is not supported");
    }
    return {};
  }

  caf::expected<void> accel(const std::string& v) {
    FERRY_TRY(o, qemu_opts::parse(v, "accel"));
    const std::string a = o.get("accel").value_or("");
    if (a == "kvm") {
      if (auto ok = o.only({"accel", "dirty-ring-size"}); !ok)
        return ok.error();
      cfg.accel = vm_config::accel_kind::kvm;
      FERRY_TRY(ring, o.get_uint("dirty-ring-size", 0));
      if (ring != 0 && ((ring & (ring - 1)) != 0 || ring > 65536))
        return invalid("-accel kvm: dirty-ring-size must be a power of two up to 65536");
      cfg.dirty_ring_size = static_cast<uint32_t>(ring);
    } else if (a == "none") {
      if (auto ok = o.only({"accel", "dirty-rate", "ws-start", "ws-pages"}); !ok)
        return ok.error();
      cfg.accel = vm_config::accel_kind::none;
      if (o.has("dirty-rate")) {
        FERRY_TRY(r, o.get_uint("dirty-rate", 0));
        cfg.dirty_rate = r;
      }
      if (o.has("ws-start")) {
        FERRY_TRY(s, o.get_size("ws-start", 0));
        cfg.ws_start = s;
      }
      if (o.has("ws-pages")) {
        FERRY_TRY(p, o.get_uint("ws-pages", 0));
        cfg.ws_pages = p;
      }
    } else {
      return invalid("-accel: accelerator '" + a + "' is not available (kvm, none)");
    }
    return {};
  }

  caf::expected<void> serial(const std::string& v) {
    if (v == "stdio") {
      cfg.serial = vm_config::serial_kind::stdio;
    } else if (v == "none" || v == "null") {
      cfg.serial = vm_config::serial_kind::none;
    } else if (v.rfind("file:", 0) == 0 && v.size() > 5) {
      cfg.serial = vm_config::serial_kind::file;
      cfg.serial_path = v.substr(5);
    } else {
      return invalid("-serial '" + v + "': expected file:PATH, stdio or none");
    }
    return {};
  }

  caf::expected<void> qmp(const std::string& v) {
    FERRY_TRY(ep, parse_endpoint(v));
    cfg.qmp.push_back(std::move(ep));
    return {};
  }

  caf::expected<void> incoming(const std::string& v) {
    cfg.incoming = v;
    return {};
  }

  // The checks across flags, once all are read.
  caf::expected<vm_config> finish() {
    if (machine_backend) {
      auto it = backends.find(*machine_backend);
      if (it == backends.end())
        return invalid("Memory backend '" + *machine_backend + "' not found");
      if (ram_size_given && it->second.size != cfg.ram_size)
        return invalid("backend memory size must be equal to -m (" + std::to_string(cfg.ram_size) +
                       " bytes), backend has " + std::to_string(it->second.size));
      cfg.backend = it->second;
      cfg.ram_size = cfg.backend.size;
    } else {
      cfg.backend.type = memory_backend::kind::ram;
      cfg.backend.size = cfg.ram_size;
    }
    if (cfg.ram_size == 0 || cfg.ram_size % page_size != 0)
      return invalid("memory size must be a non-zero multiple of 4 KiB");
    FERRY_TRY(drives, blocks.finish());
    cfg.drives = std::move(drives);
    if (!cfg.drives.empty())
      cfg.drive = cfg.drives.front().path;
    return cfg;
  }
};

using flag_handler = caf::expected<void> (vm_args_parser::*)(const std::string&);

// Flags that take a value, and who reads it.
const std::map<std::string, flag_handler>& value_flags() {
  static const std::map<std::string, flag_handler> t = {
    {"-name", &vm_args_parser::name},         {"-uuid", &vm_args_parser::uuid},
    {"-m", &vm_args_parser::memory},          {"-smp", &vm_args_parser::smp},
    {"-drive", &vm_args_parser::drive},       {"-blockdev", &vm_args_parser::blockdev},
    {"-object", &vm_args_parser::object},     {"-machine", &vm_args_parser::machine},
    {"-M", &vm_args_parser::machine},         {"-accel", &vm_args_parser::accel},
    {"-qmp", &vm_args_parser::qmp},           {"-serial", &vm_args_parser::serial},
    {"-incoming", &vm_args_parser::incoming},
  };
  return t;
}

} // namespace

caf::expected<vm_config> parse_vm_args(const std::vector<std::string>& args) {
  vm_args_parser p;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    if (flag.rfind("--", 0) == 0)
      flag.erase(0, 1); // QEMU accepts --flag as -flag
    if (flag == "-S") {
      p.cfg.start_paused = true;
    } else if (flag == "-nographic" || flag == "-nodefaults" || flag == "-no-user-config") {
    } else if (flag == "-enable-kvm") {
      p.cfg.accel = vm_config::accel_kind::kvm;
    } else if (flag == "-display" || flag == "-monitor" || flag == "-vga") {
      if (i + 1 >= args.size())
        return invalid("option '" + flag + "' requires an argument");
      const std::string& v = args[++i];
      if (v != "none")
        return invalid(flag + " '" + v + "': only 'none' is supported");
    } else if (auto h = value_flags().find(flag); h != value_flags().end()) {
      if (i + 1 >= args.size())
        return invalid("option '" + flag + "' requires an argument");
      if (auto ok = (p.*(h->second))(args[++i]); !ok)
        return ok.error();
    } else {
      return invalid("invalid option '" + args[i] + "'");
    }
  }
  return p.finish();
}

} // namespace ferry
