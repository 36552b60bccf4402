#include "ops/catalog.hpp"

#include "ops/samples/samples.hpp"

namespace kjit::catalog {

std::vector<Family> shipped(const std::string& arch) {
  return {Family{"samples", samples::shipped(arch)}};
}

}  // namespace kjit::catalog
