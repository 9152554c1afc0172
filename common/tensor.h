#pragma once
// Dense float storage shared by traces, the reference transformer and the replay engine.
// Row-major throughout: one row = one position's vector, as HDF5 and numpy lay it out.
#include <Eigen/Dense>
#include <cstdint>
#include <vector>

#include "common/error.h"
#include "common/huge_pages.h"

namespace kvsim {

using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<RowMatrixXf>;
using ConstMatrixMap = Eigen::Map<const RowMatrixXf>;

// A [heads, positions, dim] float tensor stored contiguously, head-major: the layout of one
// layer's queries, keys or values in a trace. Head(h) views one head as a positions x dim
// matrix without copying; a view is valid while the tensor lives and is not reassigned.
class HeadTensor {
 public:
  HeadTensor() = default;
  HeadTensor(int heads, int64_t positions, int dim)
      : heads_(heads),
        positions_(positions),
        dim_(dim),
        data_(static_cast<size_t>(heads) * static_cast<size_t>(positions) * dim, 0.0f) {
    KVSIM_ASSERT(heads >= 0 && positions >= 0 && dim >= 0, "negative tensor extent");
  }

  int heads() const { return heads_; }
  int64_t positions() const { return positions_; }
  int dim() const { return dim_; }
  bool empty() const { return data_.empty(); }
  size_t size() const { return data_.size(); }
  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }

  ConstMatrixMap Head(int h) const {
    KVSIM_ASSERT(h >= 0 && h < heads_, "head {} out of range [0, {})", h, heads_);
    return ConstMatrixMap(data_.data() + HeadOffset(h), positions_, dim_);
  }
  MatrixMap Head(int h) {
    KVSIM_ASSERT(h >= 0 && h < heads_, "head {} out of range [0, {})", h, heads_);
    return MatrixMap(data_.data() + HeadOffset(h), positions_, dim_);
  }
  // Pointer to element [h, pos, 0].
  float* Row(int h, int64_t pos) { return data_.data() + HeadOffset(h) + pos * dim_; }
  const float* Row(int h, int64_t pos) const { return data_.data() + HeadOffset(h) + pos * dim_; }

  friend bool operator==(const HeadTensor&, const HeadTensor&) = default;

 private:
  size_t HeadOffset(int h) const {
    return static_cast<size_t>(h) * static_cast<size_t>(positions_) * static_cast<size_t>(dim_);
  }

  int heads_ = 0;
  int64_t positions_ = 0;
  int dim_ = 0;
  std::vector<float, HugePageAllocator<float>> data_;  // a layer is hundreds of MB
};

}  // namespace kvsim
