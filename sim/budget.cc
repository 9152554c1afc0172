#include "sim/budget.h"

#include <charconv>
#include <cmath>
#include <string>
#include <utility>

#include "common/error.h"

namespace kvsim::sim {

Budget Budget::Parse(std::string_view text, std::string_view context) {
  Budget budget;
  budget.text = std::string(text);
  const bool fraction = !text.empty() && text.back() == 'p';
  // Binary byte units; the longest suffix first so "MiB" is not read as "B".
  static constexpr std::pair<std::string_view, double> kUnits[] = {
      {"GiB", 1024.0 * 1024.0 * 1024.0}, {"MiB", 1024.0 * 1024.0}, {"KiB", 1024.0}, {"B", 1.0}};
  double unit = 0.0;
  std::string_view number = fraction ? text.substr(0, text.size() - 1) : text;
  for (const auto& [suffix, bytes] : kUnits) {
    if (!fraction && text.ends_with(suffix)) {
      unit = bytes;
      number = text.substr(0, text.size() - suffix.size());
      break;
    }
  }
  double value = 0.0;
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  const bool parsed = !number.empty() && ec == std::errc() && end == number.data() + number.size();
  if (unit > 0.0) {
    if (!parsed || !(value * unit >= 1.0) || value * unit > 1e18) {
      ThrowInputError(
          "{}: budget '{}' is not a valid byte size: expected a positive number followed by B, "
          "KiB, MiB or GiB, e.g. 64MiB",
          context, text);
    }
    budget.kind = Kind::kBytes;
    value *= unit;
  } else if (fraction) {
    if (!parsed || !(value > 0.0 && value <= 1.0)) {
      ThrowInputError(
          "{}: budget '{}' is not a valid prompt fraction: expected a number in (0, 1] "
          "followed by 'p', e.g. 0.25p",
          context, text);
    }
    budget.kind = Kind::kPromptFraction;
  } else {
    if (!parsed || !(value >= 1.0) || std::floor(value) != value || value > 1e15) {
      ThrowInputError(
          "{}: budget '{}' is not valid: expected a whole number of tokens >= 1 "
          "(e.g. 256), a prompt fraction (e.g. 0.25p) or bytes (e.g. 64MiB)",
          context, text);
    }
    budget.kind = Kind::kTokens;
  }
  budget.value = value;
  return budget;
}

int64_t Budget::ResolveTokens(int64_t prompt_len, int64_t bytes_per_token) const {
  if (kind == Kind::kTokens) return static_cast<int64_t>(value);
  if (kind == Kind::kBytes) {
    if (bytes_per_token <= 0) {
      ThrowInputError("budget '{}': a bytes budget is not supported here (use tokens)", text);
    }
    const auto tokens =
        static_cast<int64_t>(std::floor(value / static_cast<double>(bytes_per_token)));
    return tokens < 1 ? 1 : tokens;
  }
  const auto tokens = static_cast<int64_t>(std::floor(value * static_cast<double>(prompt_len)));
  return tokens < 1 ? 1 : tokens;
}

const char* RegimeName(Regime regime) { return regime == Regime::kBounded ? "bounded" : "prefill"; }

Regime ParseRegime(std::string_view text, std::string_view context) {
  if (text == "bounded") return Regime::kBounded;
  if (text == "prefill") return Regime::kPrefill;
  ThrowInputError("{}: regime '{}' is not valid: expected 'bounded' or 'prefill'", context, text);
}

const char* GqaModeName(GqaMode mode) {
  return mode == GqaMode::kKvHead ? "kv-head" : "query-head";
}

GqaMode ParseGqaMode(std::string_view text, std::string_view context) {
  if (text == "kv-head") return GqaMode::kKvHead;
  if (text == "query-head") return GqaMode::kQueryHead;
  ThrowInputError("{}: GQA mode '{}' is not valid: expected 'kv-head' or 'query-head'", context,
                  text);
}

const char* EvictTimingName(EvictTiming timing) {
  return timing == EvictTiming::kAfterAttend ? "after-attend" : "before-attend";
}

EvictTiming ParseEvictTiming(std::string_view text, std::string_view context) {
  if (text == "after-attend") return EvictTiming::kAfterAttend;
  if (text == "before-attend") return EvictTiming::kBeforeAttend;
  ThrowInputError(
      "{}: eviction timing '{}' is not valid: expected 'after-attend' or "
      "'before-attend'",
      context, text);
}

const char* TieRuleName(TieRule rule) {
  switch (rule) {
    case TieRule::kKeepNewest:
      return "newest";
    case TieRule::kKeepOldest:
      return "oldest";
    case TieRule::kRandom:
      return "random";
  }
  return "?";
}

TieRule ParseTieRule(std::string_view text, std::string_view context) {
  if (text == "newest") return TieRule::kKeepNewest;
  if (text == "oldest") return TieRule::kKeepOldest;
  if (text == "random") return TieRule::kRandom;
  ThrowInputError("{}: tie rule '{}' is not valid: expected 'newest', 'oldest' or 'random'",
                  context, text);
}

}  // namespace kvsim::sim
