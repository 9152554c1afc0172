#pragma once
// Next-token sampling as llama2.c run.c does it: greedy argmax at temperature 0, otherwise
// softmax(logits / temperature) sampled whole (top_p >= 1) or within the top-p nucleus
// (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration"). Random numbers come
// from std::mt19937_64 seeded explicitly, so a seed gives the same tokens on every platform.
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace kvsim::models {

struct SamplingOptions {
  float temperature = 0.0f;  // 0 = greedy (argmax)
  float top_p = 1.0f;        // in (0, 1]; 1 = no nucleus truncation
  uint64_t seed = 0;
  // Throws InputError naming `context` unless temperature >= 0 and top_p in (0, 1].
  void Validate(const std::string& context) const;
};

// Index of the largest logit (the lowest index on ties).
int32_t Argmax(std::span<const float> logits);

// The top-p nucleus of a probability vector: ids by decreasing probability (lower id first on
// ties), the shortest prefix whose cumulative probability exceeds top_p (all ids if it never
// does, e.g. top_p = 1).
std::vector<int32_t> TopPNucleus(std::span<const float> probs, float top_p);

class Sampler {
 public:
  explicit Sampler(SamplingOptions options);
  // Draws the next token from `logits` (one per vocabulary entry). Consumes one random number
  // per call unless greedy.
  int32_t Sample(std::span<const float> logits);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
  std::vector<float> probs_;
};

}  // namespace kvsim::models
