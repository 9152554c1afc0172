#pragma once
// Policy parameters: string key -> string value as given on the command line (`--param
// key=value`) or in a sweep file, read through typed getters that state each parameter's default
// and constraint. A factory reads every parameter it knows, then calls Validate(), which rejects
// any key no getter asked for (ceres' Options::IsValid message shape: key, value, constraint).
//
// Thread-safety: getters record the keys they were asked for, so one PolicyParams must not be
// read from two threads at once; copy it per task.
#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvsim::policies {

class PolicyParams {
 public:
  PolicyParams() = default;
  explicit PolicyParams(std::map<std::string, std::string, std::less<>> values)
      : values_(std::move(values)) {}

  // Parses "key=value" items; throws InputError naming `context` (e.g. "--param") and the item
  // if it has no '=' or an empty key, or repeats a key.
  static PolicyParams Parse(std::span<const std::string> items, std::string_view context);

  void Set(std::string key, std::string value);
  bool empty() const { return values_.empty(); }
  const std::map<std::string, std::string, std::less<>>& values() const { return values_; }

  // Typed getters: the value of `key` or `default_value` if absent. Throw InputError naming the
  // policy, key, value and constraint if the value does not parse or lies outside [min, max].
  int64_t GetInt(std::string_view key, int64_t default_value, int64_t min, int64_t max) const;
  double GetDouble(std::string_view key, double default_value, double min, double max) const;
  bool GetBool(std::string_view key, bool default_value) const;  // true/false/1/0
  // One of `choices`.
  std::string GetChoice(std::string_view key,
                        std::string_view default_value,
                        std::span<const std::string_view> choices) const;

  // Names the policy in error messages; set by the registry before the factory runs.
  void set_policy_name(std::string name) { policy_name_ = std::move(name); }
  const std::string& policy_name() const { return policy_name_; }
  // Throws InputError for the first key no getter has read: "policy 'h2o': unknown parameter
  // 'foo=3'; expected one of: recent_ratio" (or "takes no parameters").
  void Validate() const;

  // "key=value" joined by ';' in key order, of the given parameters whose value differs from the
  // default its getter declared (empty = all defaults). Call after the factory ran.
  std::string NonDefaultString() const;
  // All given parameters, "key=value" joined by ';' in key order.
  std::string ToString() const;

 private:
  const std::string* Find(std::string_view key) const;

  std::map<std::string, std::string, std::less<>> values_;
  std::string policy_name_ = "?";
  mutable std::set<std::string, std::less<>> known_;       // keys some getter asked for
  mutable std::set<std::string, std::less<>> at_default_;  // given keys equal to the default
};

}  // namespace kvsim::policies
