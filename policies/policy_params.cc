#include "policies/policy_params.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>
#include <cmath>

#include "common/error.h"

namespace kvsim::policies {

PolicyParams PolicyParams::Parse(std::span<const std::string> items, std::string_view context) {
  PolicyParams params;
  for (const std::string& item : items) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      ThrowInputError("{}: '{}' is not a policy parameter: expected key=value", context, item);
    }
    std::string key = item.substr(0, eq);
    if (params.values_.count(key) != 0) {
      ThrowInputError("{}: parameter '{}' is given twice", context, key);
    }
    params.values_.emplace(std::move(key), item.substr(eq + 1));
  }
  return params;
}

void PolicyParams::Set(std::string key, std::string value) {
  values_[std::move(key)] = std::move(value);
}

const std::string* PolicyParams::Find(std::string_view key) const {
  known_.emplace(key);
  const auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

int64_t PolicyParams::GetInt(std::string_view key,
                             int64_t default_value,
                             int64_t min,
                             int64_t max) const {
  const std::string* text = Find(key);
  if (text == nullptr) return default_value;
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (text->empty() || ec != std::errc() || end != text->data() + text->size() || value < min ||
      value > max) {
    ThrowInputError("policy '{}': parameter {}={} is not valid: expected an integer in [{}, {}]",
                    policy_name_, key, *text, min, max);
  }
  if (value == default_value) at_default_.emplace(key);
  return value;
}

double PolicyParams::GetDouble(std::string_view key,
                               double default_value,
                               double min,
                               double max) const {
  const std::string* text = Find(key);
  if (text == nullptr) return default_value;
  double value = 0.0;
  const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (text->empty() || ec != std::errc() || end != text->data() + text->size() ||
      !std::isfinite(value) || value < min || value > max) {
    ThrowInputError("policy '{}': parameter {}={} is not valid: expected a number in [{}, {}]",
                    policy_name_, key, *text, min, max);
  }
  if (value == default_value) at_default_.emplace(key);
  return value;
}

bool PolicyParams::GetBool(std::string_view key, bool default_value) const {
  const std::string* text = Find(key);
  if (text == nullptr) return default_value;
  bool value = false;
  if (*text == "true" || *text == "1") {
    value = true;
  } else if (*text == "false" || *text == "0") {
    value = false;
  } else {
    ThrowInputError("policy '{}': parameter {}={} is not valid: expected true, false, 1 or 0",
                    policy_name_, key, *text);
  }
  if (value == default_value) at_default_.emplace(key);
  return value;
}

std::string PolicyParams::GetChoice(std::string_view key,
                                    std::string_view default_value,
                                    std::span<const std::string_view> choices) const {
  const std::string* text = Find(key);
  if (text == nullptr) return std::string(default_value);
  for (const std::string_view choice : choices) {
    if (*text == choice) {
      if (choice == default_value) at_default_.emplace(key);
      return *text;
    }
  }
  ThrowInputError("policy '{}': parameter {}={} is not valid: expected one of {}", policy_name_,
                  key, *text, fmt::join(choices, ", "));
}

void PolicyParams::Validate() const {
  for (const auto& [key, value] : values_) {
    if (known_.count(key) != 0) continue;
    if (known_.empty()) {
      ThrowInputError("policy '{}': unknown parameter {}={}: this policy takes no parameters",
                      policy_name_, key, value);
    }
    ThrowInputError("policy '{}': unknown parameter {}={}: expected one of {}", policy_name_, key,
                    value, fmt::join(known_, ", "));
  }
}

std::string PolicyParams::NonDefaultString() const {
  std::vector<std::string> items;
  for (const auto& [key, value] : values_) {
    if (at_default_.count(key) == 0) items.push_back(key + "=" + value);
  }
  return fmt::format("{}", fmt::join(items, ";"));
}

std::string PolicyParams::ToString() const {
  std::vector<std::string> items;
  for (const auto& [key, value] : values_) items.push_back(key + "=" + value);
  return fmt::format("{}", fmt::join(items, ";"));
}

}  // namespace kvsim::policies
