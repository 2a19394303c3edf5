#include "agent/transport/migration_address.hpp"

#include <boost/json.hpp>

#include <charconv>

namespace ferry {

namespace json = boost::json;

namespace {

bool parse_port(std::string_view s, uint16_t& out) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || v > 65535)
    return false;
  out = static_cast<uint16_t>(v);
  return true;
}

address_or_error parse_host_port(std::string_view hp, const std::string& whole) {
  migration_address a;
  a.type = migration_address::kind::tcp;
  size_t colon = 0;
  if (!hp.empty() && hp.front() == '[') {
    const size_t close = hp.find(']');
    if (close == std::string_view::npos || close + 1 >= hp.size() || hp[close + 1] != ':')
      return "address '" + whole + "' is not host:port";
    a.host = std::string{hp.substr(1, close - 1)};
    colon = close + 1;
  } else {
    colon = hp.rfind(':');
    if (colon == std::string_view::npos)
      return "address '" + whole + "' is not host:port";
    a.host = std::string{hp.substr(0, colon)};
  }
  // QEMU drops socket options after a comma (",ipv4" ...): accept and ignore.
  std::string_view port = hp.substr(colon + 1);
  port = port.substr(0, port.find(','));
  if (!parse_port(port, a.port))
    return "address '" + whole + "': port '" + std::string{port} + "' is not a number";
  if (a.host.empty())
    a.host = "0.0.0.0";
  return a;
}

std::string str(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string{v->get_string()} : std::string{};
}

address_or_error parse_channel(const json::object& ch) {
  const std::string type = str(ch, "channel-type");
  if (type != "main")
    return "Channel type '" + type + "' is not supported";
  const auto* addr = ch.if_contains("addr");
  if (addr == nullptr || !addr->is_object())
    return "Parameter 'addr' is missing";
  const auto& a = addr->get_object();
  const std::string transport = str(a, "transport");
  if (transport == "socket") {
    const std::string stype = str(a, "type");
    if (stype == "inet") {
      const std::string host = str(a, "host");
      const std::string port = str(a, "port");
      return parse_host_port(host.find(':') != std::string::npos ? "[" + host + "]:" + port
                                                                 : host + ":" + port,
                             host + ":" + port);
    }
    if (stype == "unix") {
      migration_address m;
      m.type = migration_address::kind::unix_socket;
      m.path = str(a, "path");
      if (m.path.empty())
        return "Parameter 'path' is missing";
      return m;
    }
    return "socket address type '" + stype + "' is not supported for migration by Ferry";
  }
  if (transport == "exec") {
    migration_address m;
    m.type = migration_address::kind::exec;
    const auto* args = a.if_contains("args");
    if (args == nullptr || !args->is_array() || args->get_array().empty())
      return "Parameter 'args' is missing";
    for (const auto& w : args->get_array()) {
      if (!w.is_string())
        return "Invalid parameter type for 'args', expected: string";
      m.argv.emplace_back(w.get_string());
    }
    return m;
  }
  if (transport == "file") {
    migration_address m;
    m.type = migration_address::kind::file;
    m.path = str(a, "filename");
    if (m.path.empty())
      return "Parameter 'filename' is missing";
    if (const auto* off = a.if_contains("offset")) {
      if (off->is_uint64())
        m.offset = off->get_uint64();
      else if (off->is_int64() && off->get_int64() >= 0)
        m.offset = static_cast<uint64_t>(off->get_int64());
      else
        return "Parameter 'offset' expects uint64";
    }
    return m;
  }
  if (transport == "rdma")
    return "RDMA migration is not supported by Ferry";
  return "Parameter 'transport' does not accept value '" + transport + "'";
}

} // namespace

std::string migration_address::describe() const {
  switch (type) {
    case kind::tcp:
      return "tcp:" + host + ":" + std::to_string(port);
    case kind::unix_socket:
      return "unix:" + path;
    case kind::exec: {
      std::string s = "exec:";
      for (size_t i = 0; i < argv.size(); ++i)
        s += (i != 0 ? " " : "") + argv[i];
      return s;
    }
    case kind::file:
      return "file:" + path + (offset != 0 ? ",offset=" + std::to_string(offset) : "");
  }
  return "?";
}

address_or_error parse_migration_uri(const std::string& uri) {
  auto starts = [&](std::string_view p) { return uri.compare(0, p.size(), p) == 0; };
  if (starts("tcp:"))
    return parse_host_port(std::string_view{uri}.substr(4), uri);
  if (starts("unix:")) {
    migration_address a;
    a.type = migration_address::kind::unix_socket;
    a.path = uri.substr(5);
    if (a.path.empty())
      return "unix: needs a socket path";
    return a;
  }
  if (starts("exec:")) {
    migration_address a;
    a.type = migration_address::kind::exec;
    a.argv = {"/bin/sh", "-c", uri.substr(5)};
    return a;
  }
  if (starts("file:")) {
    migration_address a;
    a.type = migration_address::kind::file;
    std::string rest = uri.substr(5);
    const size_t comma = rest.rfind(",offset=");
    if (comma != std::string::npos) {
      const std::string off = rest.substr(comma + 8);
      uint64_t v = 0;
      const bool hex = off.rfind("0x", 0) == 0;
      auto [p, ec] =
        std::from_chars(off.data() + (hex ? 2 : 0), off.data() + off.size(), v, hex ? 16 : 10);
      if (ec != std::errc{} || p != off.data() + off.size())
        return "file URI has bad offset " + off;
      a.offset = v;
      rest.resize(comma);
    }
    a.path = rest;
    if (a.path.empty())
      return "file: needs a path";
    return a;
  }
  if (starts("rdma:"))
    return "RDMA migration is not supported by Ferry";
  if (starts("fd:"))
    return "fd: migration is not supported by Ferry";
  return "unknown migration protocol: " + uri;
}

address_or_error parse_migration_target(const json::value* uri, const json::value* channels) {
  if ((uri != nullptr) == (channels != nullptr))
    return "need either 'uri' or 'channels' argument";
  if (uri != nullptr)
    return parse_migration_uri(std::string{uri->as_string()});
  const auto& list = channels->as_array();
  if (list.empty())
    return "migration channels list is empty";
  if (list.size() > 1)
    return "Channel list has more than one entries";
  if (!list[0].is_object())
    return "Invalid parameter type for 'channels[0]', expected: object";
  return parse_channel(list[0].get_object());
}

json::value socket_address_json(const migration_address& a) {
  if (a.type == migration_address::kind::unix_socket)
    return json::object{{"type", "unix"}, {"path", a.path}};
  return json::object{{"type", "inet"}, {"host", a.host}, {"port", std::to_string(a.port)}};
}

} // namespace ferry
