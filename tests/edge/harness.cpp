// The edge front end driven from Python's tests (tests/python/test_edge.py compares it with the
// Python classes, through ctypes): a new fastoptim::edge::Optimizer of one rule over caller-owned
// float buffers, stepped once per set of gradients. Test-only: it is no part of the package.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <fastoptim/edge/optimizer.h>

namespace {

using namespace fastoptim;

// What the Python side hands over: `count` parameters (data, numel, ndim, sizes), `steps` sets of
// `count` gradients (step-major), the rule's hyperparameters in field order, the state format.
struct Run {
  int count;
  float* const* data;
  const std::int64_t* numels;
  const int* ndims;
  const std::int64_t* const* shapes;
  int steps;
  const float* const* grads;
  const double* hyper;
  int hyper_count;
  edge::StateFormat format;
};

// 0, or the edge optimizer's error (its status and message) written to `error`.
template <class Rule>
int run(const Run& r, std::string& error) {
  using Hyper = typename Rule::Hyper;
  if (r.hyper_count != int(Hyper::kFieldCount)) {
    error = "wrong number of hyperparameters";
    return 2;
  }
  std::vector<edge::Param> params;
  for (int i = 0; i < r.count; ++i)
    params.push_back({r.data[i], r.numels[i], r.ndims[i] > 1 ? r.shapes[i][0] : 1, r.ndims[i], r.shapes[i]});
  edge::Optimizer<Rule> optimizer(params, Hyper::from(r.hyper), r.format);
  bool ok = optimizer.status() == edge::Status::ok;
  for (int k = 0; k < r.steps && ok; ++k) ok = optimizer.step(r.grads + std::size_t(k) * r.count) == edge::Status::ok;
  if (ok) return 0;
  error = optimizer.error();
  return 2;
}

}  // namespace

extern "C" {

// The rules this harness runs, comma-separated.
const char* fastoptim_edge_rules() {
#define FASTOPTIM_NAME(Type, name) #name ","
  static const std::string names = FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_NAME);
#undef FASTOPTIM_NAME
  return names.c_str();
}

// Steps `rule` as described by Run's fields: 0 on success, 1 for an unknown rule, 2 for an error
// the edge optimizer reports (its message in `error`, `error_size` bytes with the terminator).
// `format`: edge::StateFormat's value (0 float32, 1 eight_bit, 2 bfloat16).
int fastoptim_edge_run(const char* rule, int count, float* const* data, const std::int64_t* numels, const int* ndims,
                       const std::int64_t* const* shapes, int steps, const float* const* grads, const double* hyper,
                       int hyper_count, int format, char* error, int error_size) {
  const Run r{count, data, numels, ndims, shapes, steps, grads, hyper, hyper_count, static_cast<edge::StateFormat>(format)};
  std::string message;
  int status = 1;
#define FASTOPTIM_RUN(Type, name) \
  if (std::strcmp(rule, #name) == 0) status = run<rules::Type>(r, message);
  FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_RUN)
#undef FASTOPTIM_RUN
  if (status == 1) message = std::string("unknown rule ") + rule;
  if (error_size > 0) {
    std::strncpy(error, message.c_str(), std::size_t(error_size) - 1);
    error[error_size - 1] = '\0';
  }
  return status;
}

}  // extern "C"
