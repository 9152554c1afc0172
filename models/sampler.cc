#include "models/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"

namespace kvsim::models {

void SamplingOptions::Validate(const std::string& context) const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    ThrowInputError("{}: temperature is {}, expected a finite value >= 0", context, temperature);
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    ThrowInputError("{}: top_p is {}, expected a value in (0, 1]", context, top_p);
  }
}

int32_t Argmax(std::span<const float> logits) {
  KVSIM_ASSERT(!logits.empty(), "Argmax of no logits");
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

std::vector<int32_t> TopPNucleus(std::span<const float> probs, float top_p) {
  std::vector<int32_t> ids(probs.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    return probs[static_cast<size_t>(a)] > probs[static_cast<size_t>(b)];
  });
  float cumulative = 0.0f;
  for (size_t i = 0; i < ids.size(); ++i) {
    cumulative += probs[static_cast<size_t>(ids[i])];
    if (cumulative > top_p) {
      ids.resize(i + 1);
      break;
    }
  }
  return ids;
}

Sampler::Sampler(SamplingOptions options) : options_(options), rng_(options.seed) {
  options_.Validate("sampler");
}

int32_t Sampler::Sample(std::span<const float> logits) {
  if (options_.temperature == 0.0f) return Argmax(logits);
  // Softmax of logits / temperature, shifted by the max for stability.
  probs_.resize(logits.size());
  const float max_logit = logits[static_cast<size_t>(Argmax(logits))];
  float sum = 0.0f;
  for (size_t i = 0; i < logits.size(); ++i) {
    probs_[i] = std::exp((logits[i] - max_logit) / options_.temperature);
    sum += probs_[i];
  }
  for (float& p : probs_) p /= sum;
  // A uniform float in [0, 1) from the top 24 bits: same value with every standard library.
  const float coin = static_cast<float>(rng_() >> 40) * (1.0f / 16777216.0f);

  std::vector<int32_t> candidates;
  if (options_.top_p < 1.0f) {
    candidates = TopPNucleus(probs_, options_.top_p);
  } else {
    candidates.resize(probs_.size());
    std::iota(candidates.begin(), candidates.end(), 0);
  }
  float mass = 0.0f;
  for (const int32_t id : candidates) mass += probs_[static_cast<size_t>(id)];
  // Inverse CDF over the candidates, renormalised by their mass.
  const float target = coin * mass;
  float cdf = 0.0f;
  for (const int32_t id : candidates) {
    cdf += probs_[static_cast<size_t>(id)];
    if (target < cdf) return id;
  }
  return candidates.back();  // rounding
}

}  // namespace kvsim::models
