#include "policies/episodes.h"

#include <algorithm>
#include <limits>
#include <random>

#include "common/error.h"

namespace kvsim::policies {
namespace {

// Uniform double in [0, 1) from 53 random bits (portable, unlike std::uniform_real_distribution).
double Uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

Eigen::VectorXd Normalised(Eigen::VectorXd v) {
  const double norm = v.norm();
  if (norm > 0.0) v /= norm;
  return v;
}

// One seeded Lloyd run with k-means++ seeding.
KMeansResult LloydRun(const Eigen::MatrixXd& points, int k, std::mt19937_64& rng) {
  const int64_t n = points.rows();
  KMeansResult r;
  r.centroids.resize(k, points.cols());
  r.centroids.row(0) = points.row(static_cast<int64_t>(Uniform01(rng) * static_cast<double>(n)));
  Eigen::VectorXd d2(n);
  for (int c = 1; c < k; ++c) {
    for (int64_t i = 0; i < n; ++i) {
      d2[i] = (r.centroids.topRows(c).rowwise() - points.row(i)).rowwise().squaredNorm().minCoeff();
    }
    const double total = d2.sum();
    int64_t pick = n - 1;
    if (total > 0.0) {
      double u = Uniform01(rng) * total;
      for (int64_t i = 0; i < n; ++i) {
        if ((u -= d2[i]) < 0.0) {
          pick = i;
          break;
        }
      }
    } else {
      pick = static_cast<int64_t>(Uniform01(rng) * static_cast<double>(n));
    }
    r.centroids.row(c) = points.row(pick);
  }
  r.labels.assign(static_cast<size_t>(n), -1);
  for (int iter = 0; iter < 300; ++iter) {  // sklearn's max_iter
    bool changed = false;
    r.inertia = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      Eigen::Index best = 0;
      const double dist =
          (r.centroids.rowwise() - points.row(i)).rowwise().squaredNorm().minCoeff(&best);
      r.inertia += dist;
      if (r.labels[static_cast<size_t>(i)] != static_cast<int>(best)) {
        r.labels[static_cast<size_t>(i)] = static_cast<int>(best);
        changed = true;
      }
    }
    if (!changed) break;
    for (int c = 0; c < k; ++c) {
      Eigen::RowVectorXd sum = Eigen::RowVectorXd::Zero(points.cols());
      int64_t count = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (r.labels[static_cast<size_t>(i)] == c) {
          sum += points.row(i);
          ++count;
        }
      }
      if (count > 0) r.centroids.row(c) = sum / static_cast<double>(count);  // else keep
    }
  }
  return r;
}

}  // namespace

std::vector<EpisodeWindow> MakeWindows(std::span<const traces::Segment> segments, int window) {
  KVSIM_ASSERT(window >= 1, "episode window {} < 1", window);
  std::vector<EpisodeWindow> out;
  const int n = static_cast<int>(segments.size());
  for (int first = 0; first < n; first += window) {
    const int last = std::min(n, first + window) - 1;
    out.push_back({first, last, segments[static_cast<size_t>(first)].begin,
                   segments[static_cast<size_t>(last)].end});
  }
  return out;
}

Eigen::VectorXd KeyEmbedding(const traces::Trace& trace, int64_t begin, int64_t end) {
  const models::ModelShape& shape = trace.shape();
  const int d = shape.head_dim;
  Eigen::VectorXd e(static_cast<int64_t>(trace.num_layers()) * shape.kv_heads * d);
  int64_t offset = 0;
  for (int l = 0; l < trace.num_layers(); ++l) {
    for (int h = 0; h < shape.kv_heads; ++h, offset += d) {
      e.segment(offset, d) = trace.Keys(l, h)
                                 .middleRows(begin, end - begin)
                                 .colwise()
                                 .mean()
                                 .transpose()
                                 .cast<double>();
    }
  }
  return Normalised(std::move(e));
}

Eigen::VectorXd QueryEmbedding(const traces::Trace& trace, int64_t begin, int64_t end) {
  const models::ModelShape& shape = trace.shape();
  const int d = shape.head_dim;
  const int g = shape.GroupSize();
  Eigen::VectorXd e =
      Eigen::VectorXd::Zero(static_cast<int64_t>(trace.num_layers()) * shape.kv_heads * d);
  int64_t offset = 0;
  for (int l = 0; l < trace.num_layers(); ++l) {
    for (int h = 0; h < shape.kv_heads; ++h, offset += d) {
      for (int i = 0; i < g; ++i) {
        e.segment(offset, d) += trace.Queries(l, h * g + i)
                                    .middleRows(begin, end - begin)
                                    .colwise()
                                    .mean()
                                    .transpose()
                                    .cast<double>();
      }
    }
  }
  return Normalised(std::move(e));
}

KMeansResult KMeans(const Eigen::MatrixXd& points, int k, uint64_t seed, int restarts) {
  KVSIM_ASSERT(k >= 1 && k <= points.rows(), "k-means with k = {} on {} points", k, points.rows());
  KVSIM_ASSERT(restarts >= 1, "k-means with {} restarts", restarts);
  std::mt19937_64 rng(seed);
  KMeansResult best;
  best.inertia = std::numeric_limits<double>::infinity();
  for (int run = 0; run < restarts; ++run) {
    KMeansResult r = LloydRun(points, k, rng);
    if (r.inertia < best.inertia) best = std::move(r);
  }
  return best;
}

int RouteToEpisode(const Eigen::VectorXd& embedding, const Eigen::MatrixXd& centroids) {
  Eigen::Index best = 0;
  (centroids * embedding).maxCoeff(&best);
  return static_cast<int>(best);
}

}  // namespace kvsim::policies
