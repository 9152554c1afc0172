// `epicache`: EpiCache (Kim et al. 2025, memory-and-paging.md card 1) for one question of a
// multi-turn trace. Best with block-wise prefill (ReplayOptions::prefill_block, card default
// prefill_chunk_size 2048), which makes the cache hold at most budget + one block.
//
// What a trace stands in for (card 1 (h), "Replay limits"): the sentence embeddings are replaced by
// mean keys, the patched prompt's queries by the recorded queries of the medoid windows, the
// question embedding by the question's mean query (policies/episodes.h). EpiCache builds E episode
// caches offline from the whole history and the question then picks one; replaying the one it
// picks is the same as building all E and loading that one, so the policy routes first (it reads
// whole-prompt keys and queries through PrefillAttention, as EpiCache reads the whole history
// before its block prefill) and then builds only the routed episode's cache:
//  1. history = the segments before the question's turn (the turn holding position n-1); windows
//     of `window` segments; k-means (seed 42, 10 restarts) with `episodes` clusters on this
//     LAYER's window embeddings (mean key per KV head, concatenated, unit length);
//  2. the question's embedding is routed to the centroid with the largest dot product;
//  3. patched prompt = the `medoids` windows of that episode nearest its centroid (cosine), in
//     chronological order; their queries (every query head of the stream's group);
//  4. after every prefill block, each stream keeps its top-B resident tokens by
//     s(j) = max over patched queries of softmax_j(q . k_j / sqrt(d)) over the resident keys,
//     recomputed from scratch per block (level pair-uniform: B per stream; the card's default
//     `pair` level, which lets heads of a layer share the budget, is not modelled).
// A trace without segments (or without history before the question) is one history window and no
// question: the patched prompt is the whole prompt. Protected (card 1 (d)): "system" segments, the
// question and generated tokens; they are evicted only if the budget cannot hold them otherwise,
// lowest position first. At decode steps in Regime::kBounded the lowest last-block score goes. The
// layer-wise allocation from sensitivity calibration needs keys recomputed under a block-local
// mask, which a trace does not hold: every layer gets the uniform budget (card default power = 0,
// no allocation). policy_state counts the patched prompt's queries (fp32) and one score per
// position.
#include <fmt/core.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <set>
#include <string>

#include "common/error.h"
#include "policies/episodes.h"
#include "policies/registry.h"
#include "policies/selection.h"

namespace kvsim::policies {
namespace {

class EpiCachePolicy final : public EvictionPolicy {
 public:
  EpiCachePolicy(const PolicySetup& setup, int episodes, int medoids, int window)
      : setup_(setup),
        episodes_(episodes),
        medoids_(medoids),
        window_(window),
        scores_(static_cast<size_t>(setup.num_streams()),
                std::vector<double>(static_cast<size_t>(setup.total_len), 0.0)) {}

  std::string_view Name() const override { return "epicache"; }

  void OnPrefill(const PrefillView& prefill) override {
    if (!built_) Build(prefill);
  }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    if (request.after_prefill) {  // streams score independently (their own scores_ row)
      KVSIM_ASSERT(request.prefill != nullptr, "epicache scores with the prompt's queries");
      tbb::parallel_for(size_t{0}, request.streams.size(),
                        [&](size_t i) { Score(request.streams[i], *request.prefill); });
    }
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      const int64_t count = request.min_victims[s];
      if (count == 0) continue;
      std::vector<Candidate> candidates;
      for (const sim::CacheEntry& e : stream.cache->entries()) {
        // Protected tokens rank above every score (softmax weights are <= 1), oldest first out.
        const double score = Protected(e.position) ? 2.0 - 1.0 / static_cast<double>(e.position + 1)
                                                   : scores_[s][static_cast<size_t>(e.position)];
        candidates.push_back({score, e.position});
      }
      TakeLowest(candidates, count, &decisions[s].victims);
    }
  }

  // The patched prompt's queries (the card's observation queries) and one score per position.
  int64_t StateBytes() const override {
    int64_t bytes = 0;
    for (size_t s = 0; s < scores_.size(); ++s) {
      bytes += (patched_rows_ * q_heads_per_stream_ * setup_.shape.head_dim +
                static_cast<int64_t>(scores_[s].size())) *
               static_cast<int64_t>(sizeof(float));
    }
    return bytes;
  }

 private:
  bool Protected(int64_t position) const {
    return position >= question_begin_ || system_.count(position) > 0;
  }

  void Build(const PrefillView& prefill) {
    built_ = true;
    const sim::PrefillAttention& attention = *prefill.attention;
    const models::ModelShape& shape = setup_.shape;
    const int64_t n = setup_.prompt_len;
    const int d = shape.head_dim;
    int question_turn = -1;
    for (const traces::Segment& seg : prefill.segments) {
      if (seg.begin <= n - 1 && n - 1 < seg.end) question_turn = seg.turn;
    }
    question_begin_ = n;
    for (const traces::Segment& seg : prefill.segments) {
      if (seg.turn == question_turn) question_begin_ = std::min(question_begin_, seg.begin);
    }
    std::vector<traces::Segment> history;
    for (const traces::Segment& seg : prefill.segments) {
      if (seg.role == "system") {
        for (int64_t p = seg.begin; p < seg.end; ++p) system_.insert(p);
      } else if (seg.end <= question_begin_) {
        history.push_back(seg);
      }
    }
    if (history.empty()) {
      // No conversation structure: the prompt is one history window and there is no question.
      question_begin_ = n;
      history.push_back(traces::Segment{.begin = 0, .end = n, .turn = 0, .role = ""});
    }
    const std::vector<EpisodeWindow> windows = MakeWindows(history, window_);
    const int kv_heads = shape.kv_heads;
    const int g = shape.GroupSize();
    Eigen::MatrixXd points(static_cast<int64_t>(windows.size()),
                           static_cast<int64_t>(kv_heads) * d);
    for (size_t w = 0; w < windows.size(); ++w) {
      for (int h = 0; h < kv_heads; ++h) {
        points.row(static_cast<int64_t>(w)).segment(h * d, d) =
            attention.PromptKeys(h)
                .middleRows(windows[w].begin, windows[w].end - windows[w].begin)
                .colwise()
                .mean()
                .cast<double>();
      }
      points.row(static_cast<int64_t>(w)).normalize();
    }
    const int k = std::min<int>(episodes_, static_cast<int>(windows.size()));
    const KMeansResult km = KMeans(points, k, /*seed=*/42, /*restarts=*/10);
    Eigen::VectorXd question = Eigen::VectorXd::Zero(static_cast<int64_t>(kv_heads) * d);
    for (int h = 0; h < kv_heads && question_begin_ < n; ++h) {
      for (int i = 0; i < g; ++i) {
        question.segment(h * d, d) += attention.PromptQueries(h * g + i)
                                          .middleRows(question_begin_, n - question_begin_)
                                          .colwise()
                                          .mean()
                                          .transpose()
                                          .cast<double>();
      }
    }
    episode_ = question_begin_ < n ? RouteToEpisode(question.normalized(), km.centroids) : 0;
    // Medoid windows: the top-M of the episode by cosine to its centroid, chronological.
    const Eigen::VectorXd centroid = km.centroids.row(episode_).transpose();
    std::vector<std::pair<double, size_t>> members;
    for (size_t w = 0; w < windows.size(); ++w) {
      if (km.labels[w] == episode_)
        members.push_back({-points.row(static_cast<int64_t>(w)).dot(centroid), w});
    }
    std::sort(members.begin(), members.end());
    members.resize(std::min(members.size(), static_cast<size_t>(medoids_)));
    std::vector<size_t> chosen;
    for (const auto& m : members) chosen.push_back(m.second);
    std::sort(chosen.begin(), chosen.end());
    for (const size_t w : chosen) {
      patched_.emplace_back(windows[w].begin, windows[w].end);
      patched_rows_ += windows[w].end - windows[w].begin;
    }
    q_heads_per_stream_ = prefill.streams.empty() ? 0 : prefill.streams.front().num_q_heads;
  }

  // s(j) over the stream's resident keys, from scratch (card 1 (b)).
  void Score(const StreamView& stream, const sim::PrefillAttention& prompt) {
    const sim::KvCache& cache = *stream.cache;
    if (cache.size() == 0) return;
    std::vector<double>& score = scores_[static_cast<size_t>(stream.stream)];
    if (cache.IsSourcePrefix()) {
      // The whole prefix resident (no block prefill): the same scores for every budget of a
      // sweep, so one cell computes them per layer (O(patched x prompt x d) per query head).
      std::string key = fmt::format("epicache s(j): heads {}+{}, {} positions, patched",
                                    stream.first_q_head, stream.num_q_heads, cache.size());
      for (const auto& [begin, end] : patched_) key += fmt::format(" [{}, {})", begin, end);
      const Eigen::VectorXd& best = prompt.SharedStatistic(key, [&]() -> Eigen::VectorXd {
        return PatchedMaxAttention(stream, prompt).cast<double>().transpose();
      });
      for (int64_t slot = 0; slot < cache.size(); ++slot) {
        score[static_cast<size_t>(cache.Position(slot))] = best[slot];
      }
      return;
    }
    const Eigen::RowVectorXf best = PatchedMaxAttention(stream, prompt);
    for (int64_t slot = 0; slot < cache.size(); ++slot) {
      score[static_cast<size_t>(cache.Position(slot))] = best[slot];
    }
  }

  // max over the patched queries of the stream's heads of softmax(q . k / sqrt(d)) over the
  // resident keys, per slot. In tiles of patched queries: without turns the patched prompt is the
  // whole prompt, and its attention over the resident keys would be prompt x prompt floats.
  Eigen::RowVectorXf PatchedMaxAttention(const StreamView& stream,
                                         const sim::PrefillAttention& prompt) const {
    const sim::KvCache& cache = *stream.cache;
    constexpr int64_t kTileRows = 256;
    const float scale = 1.0f / std::sqrt(static_cast<float>(setup_.shape.head_dim));
    const RowMatrixXf keys = cache.Keys();
    Eigen::RowVectorXf best = Eigen::RowVectorXf::Zero(cache.size());  // weights are >= 0
    RowMatrixXf a;
    for (int h = stream.first_q_head; h < stream.first_q_head + stream.num_q_heads; ++h) {
      const auto queries = prompt.PromptQueries(h);
      for (const auto& [first, end] : patched_) {
        for (int64_t begin = first; begin < end; begin += kTileRows) {
          const int64_t rows = std::min(kTileRows, end - begin);
          a.noalias() = queries.middleRows(begin, rows) * keys.transpose();
          for (int64_t i = 0; i < rows; ++i) {
            auto row = a.row(i);
            row *= scale;  // (q . k) * scale, as the whole-matrix product rounded it
            row = (row.array() - row.maxCoeff()).exp();
            row /= row.sum();
          }
          best = best.cwiseMax(a.colwise().maxCoeff());
        }
      }
    }
    return best;
  }

  PolicySetup setup_;
  int episodes_;
  int medoids_;
  int window_;
  bool built_ = false;
  int episode_ = -1;
  int64_t question_begin_ = 0;
  std::set<int64_t> system_;
  std::vector<std::vector<double>> scores_;  // [stream][position], last block's scores
  // The patched prompt: the chosen windows' positions [begin, end), chronological. Scoring reads
  // their queries in place from the prompt (PrefillAttention::PromptQueries): a copy would be
  // prompt x group x head_dim floats per stream without turns (537 MB per cell for a 32k-token
  // Llama-3-8B layer), and a sweep holds every cell of a layer at once (issue 11).
  std::vector<std::pair<int64_t, int64_t>> patched_;
  int64_t patched_rows_ = 0;        // positions in the patched prompt
  int64_t q_heads_per_stream_ = 0;  // query heads whose patched queries EpiCache would hold
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeEpiCache(const PolicyParams& params, const PolicySetup& setup) {
  // args.py: n_cluster = 4, n_medoid = 4, conv_window = 4 (card 1 (f)).
  const auto episodes = static_cast<int>(params.GetInt("episodes", 4, 1, 64));
  const auto medoids = static_cast<int>(params.GetInt("medoids", 4, 1, 1024));
  const auto window = static_cast<int>(params.GetInt("window", 4, 1, 1024));
  params.Validate();
  return std::make_unique<EpiCachePolicy>(setup, episodes, medoids, window);
}

}  // namespace kvsim::policies
