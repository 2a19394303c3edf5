#pragma once
// A guest's migration capabilities and parameters: QEMU 9.1's defaults, its
// cross-checks, and the query/set commands' shapes. Names and order come
// from the compiled-in schema (MigrationCapability, MigrationParameters);
// only the default values are Ferry's table.

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ferry {

// Facts about the host and guest some capabilities depend on.
struct migration_host_facts {
  bool kvm_dirty_ring = false; // dirty-limit needs KVM's dirty ring
};

class migration_settings {
public:
  explicit migration_settings(migration_host_facts facts = {});

  // query-migrate-capabilities: every capability in schema order.
  boost::json::array query_capabilities() const;
  // query-migrate-parameters: every parameter in schema order
  // (block-bitmap-mapping only once set, as QEMU does).
  boost::json::object query_parameters() const;

  // The `capabilities` list of migrate-set-capabilities (already checked
  // against the schema). An error text, or nothing when applied.
  std::optional<std::string> set_capabilities(const boost::json::array& caps,
                                              bool migration_active);
  // migrate-set-parameters arguments (already checked against the schema).
  // All or nothing: on error no parameter changes.
  std::optional<std::string> set_parameters(const boost::json::object& params,
                                            bool migration_active);

  bool capability(std::string_view name) const;
  const boost::json::value& parameter(std::string_view name) const;

  // The default of every parameter, by name (for tests and docs).
  static const boost::json::object& defaults();

private:
  std::optional<std::string>
  check_capabilities(const std::vector<std::pair<std::string, bool>>& next) const;
  std::optional<std::string> check_parameters(const boost::json::object& next) const;

  migration_host_facts facts_;
  std::vector<std::pair<std::string, bool>> caps_; // schema order
  boost::json::object params_;                     // schema order
  bool has_block_bitmap_mapping_ = false;
};

} // namespace ferry
