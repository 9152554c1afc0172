#pragma once
// EpiCache's episodes (Kim et al. 2025, memory-and-paging.md card 1 (b)) from what a trace has:
// the conversation history's segments are grouped into windows of `window` consecutive
// segments, each window embedded, the embeddings clustered by k-means, and a question routed to
// the episode whose (un-normalised) centroid has the largest dot product with its embedding.
//
// Embeddings (ours: the card's sentence-embedding model is outside the LLM and not in a trace):
//  - a window: the mean KEY of its positions, per (layer, KV head), concatenated over layers and
//    KV heads and normalised to unit length. Keys of one topic share directions, so windows on
//    one topic land together.
//  - a question: the mean QUERY of its positions, per (layer, KV head) averaged over the group's
//    query heads, concatenated the same way, unit length. Its dot product with a window
//    embedding is then (up to scale) the mean attention logit the question puts on the window's
//    mean key: "the history the question attends to".
#include <Eigen/Dense>
#include <cstdint>
#include <span>
#include <vector>

#include "traces/trace.h"

namespace kvsim::policies {

// A run of consecutive history segments [first, last] and the positions they cover.
struct EpisodeWindow {
  int first_segment = 0;
  int last_segment = 0;
  int64_t begin = 0;  // first position
  int64_t end = 0;    // one past the last position
};

// Windows of `window` consecutive segments (the last may be shorter) over `segments`.
// card 1 (f): conv_window = 4 utterances.
std::vector<EpisodeWindow> MakeWindows(std::span<const traces::Segment> segments, int window);

// Unit-length mean-key embedding of positions [begin, end).
Eigen::VectorXd KeyEmbedding(const traces::Trace& trace, int64_t begin, int64_t end);
// Unit-length mean-query embedding of positions [begin, end), grouped to KV heads.
Eigen::VectorXd QueryEmbedding(const traces::Trace& trace, int64_t begin, int64_t end);

struct KMeansResult {
  Eigen::MatrixXd centroids;  // k x dim, means of the member points (not re-normalised, card 1)
  std::vector<int> labels;    // per point
  double inertia = 0.0;       // sum of squared distances to the assigned centroid
};

// Lloyd's k-means on the rows of `points` with k-means++ seeding, `restarts` seeded runs (the
// card's sklearn n_init = 10, random_state = 42), the lowest inertia kept. Deterministic in
// (points, k, seed). REQUIRES 1 <= k <= points.rows().
KMeansResult KMeans(const Eigen::MatrixXd& points, int k, uint64_t seed, int restarts = 10);

// argmax_e embedding . centroids.row(e) (card 1 (b), raw dot product); ties: the lower index.
int RouteToEpisode(const Eigen::VectorXd& embedding, const Eigen::MatrixXd& centroids);

}  // namespace kvsim::policies
