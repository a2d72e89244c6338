#include <catch2/catch.hpp>

#include "moe/policies/planner.h"
