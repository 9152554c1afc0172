#include "sim/serving/cost_model.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace kvsim::serving {

void CostModel::Validate(const char* context) const {
  const auto positive = [&](double v, const char* name) {
    if (!(v > 0.0) || !std::isfinite(v)) {
      ThrowInputError("{}: [cost] {} = {}: expected a positive finite number", context, name, v);
    }
  };
  const auto non_negative = [&](double v, const char* name) {
    if (!(v >= 0.0) || !std::isfinite(v)) {
      ThrowInputError("{}: [cost] {} = {}: expected a non-negative finite number", context, name,
                      v);
    }
  };
  positive(hbm_bytes_per_s, "hbm_bytes_per_s");
  positive(peak_flops, "peak_flops");
  positive(swap_bytes_per_s, "swap_bytes_per_s");
  non_negative(overhead_s, "overhead_s");
  non_negative(params, "params");
  non_negative(weight_bytes, "weight_bytes");
}

double CostModel::DefaultParams(const models::ModelShape& shape) {
  const double d_model = static_cast<double>(shape.q_heads) * shape.head_dim;
  return 12.0 * shape.layers * d_model * d_model;
}

double IterationSeconds(const CostModel& cost,
                        const models::ModelShape& shape,
                        const IterationWork& work) {
  const double params = cost.params > 0.0 ? cost.params : CostModel::DefaultParams(shape);
  const double weights = cost.weight_bytes > 0.0 ? cost.weight_bytes : 2.0 * params;
  const double bytes = weights + static_cast<double>(work.attended_kv_bytes);
  const double flops = 2.0 * params * static_cast<double>(work.tokens) +
                       4.0 * shape.layers * shape.q_heads * shape.head_dim * work.attended_pairs;
  return cost.overhead_s + std::max(bytes / cost.hbm_bytes_per_s, flops / cost.peak_flops) +
         static_cast<double>(work.swap_bytes) / cost.swap_bytes_per_s;
}

}  // namespace kvsim::serving
