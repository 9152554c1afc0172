#pragma once
// The small GQA shape most replay and sweep tests use: 2 layers, 4 query heads over 2 KV heads
// (group 2), head_dim 8.
#include "models/model_shape.h"

namespace kvsim::testing {

inline models::ModelShape TinyShape() {
  models::ModelShape shape;
  shape.name = "tiny";
  shape.layers = 2;
  shape.q_heads = 4;
  shape.kv_heads = 2;
  shape.head_dim = 8;
  return shape;
}

}  // namespace kvsim::testing
