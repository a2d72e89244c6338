// The routing pipeline's features, one property each.

#include <vector>

#include "moe/engine/router.h"
#include "test_util.h"

namespace moe::engine {
namespace {

TEST_CASE("Capacity formula", "[router]") {
  CHECK(ExpertCapacity(1.0, 256, 2, 16) == 32);
  CHECK(ExpertCapacity(1.25, 100, 2, 16) == 16);  // ceil(15.625)
  CHECK(ExpertCapacity(0.0, 100, 2, 16) == 0);
}

}  // namespace
}  // namespace moe::engine
