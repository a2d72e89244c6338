# moe_target_defaults(<target>): the project's warning set and standard, applied
# per target (no global flag appending).
function(moe_target_defaults target)
  target_compile_features(${target} PUBLIC cxx_std_20)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wno-unused-parameter>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-Wshadow=local>)
endfunction()

# moe_add_test(<name> SOURCES ... LIBS ... [TIMEOUT seconds] [SKIP_RETURN_CODE code]):
# one Catch2 binary registered as one CTest test with a timeout.
function(moe_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT;SKIP_RETURN_CODE" "SOURCES;LIBS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  moe_target_defaults(${name})
  target_link_libraries(${name} PRIVATE moe_test_support ${ARG_LIBS})
  add_test(NAME ${name} COMMAND ${name} --reporter compact)
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT})
  if(ARG_SKIP_RETURN_CODE)
    set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE ${ARG_SKIP_RETURN_CODE})
  endif()
endfunction()

# moe_check_cublas_version(<min> <result-var>): sets <result-var> to TRUE when
# the cuBLAS headers of the CUDA toolkit CMake found (CUDAToolkit_INCLUDE_DIRS)
# are at least <min> (major.minor), else explains what to do: with
# MOE_WITH_CUDA=ON a fatal error, with AUTO a warning (the backend is left out).
# The CUDA backend's grouped expert GEMMs (cublasGemmGroupedBatchedEx) need
# cuBLAS 12.5.
function(moe_check_cublas_version min result_var)
  set(${result_var} FALSE PARENT_SCOPE)
  find_file(MOE_CUBLAS_API_H cublas_api.h PATHS ${CUDAToolkit_INCLUDE_DIRS} NO_DEFAULT_PATH)
  set(found "")
  if(MOE_CUBLAS_API_H)
    file(STRINGS "${MOE_CUBLAS_API_H}" lines REGEX "^#define CUBLAS_VER_(MAJOR|MINOR) ")
    string(REGEX REPLACE ".*CUBLAS_VER_MAJOR ([0-9]+).*" "\\1" major "${lines}")
    string(REGEX REPLACE ".*CUBLAS_VER_MINOR ([0-9]+).*" "\\1" minor "${lines}")
    if(major MATCHES "^[0-9]+$" AND minor MATCHES "^[0-9]+$")
      set(found "${major}.${minor}")
    endif()
  endif()
  if(found AND NOT found VERSION_LESS min)
    message(STATUS "moectl: cuBLAS ${found} (${MOE_CUBLAS_API_H})")
    set(${result_var} TRUE PARENT_SCOPE)
    return()
  endif()
  if(found)
    set(what "cuBLAS ${found} (${MOE_CUBLAS_API_H}) is older than ${min}")
  else()
    set(what "no cuBLAS headers (cublas_api.h) in ${CUDAToolkit_INCLUDE_DIRS}")
  endif()
  string(CONCAT fix "The CUDA backend's grouped expert GEMMs call cublasGemmGroupedBatchedEx, "
          "which needs cuBLAS ${min} or newer (CUDA toolkit ${min}+). Install a newer "
          "toolkit and point CMake at it (-DCMAKE_CUDA_COMPILER=<toolkit>/bin/nvcc, "
          "-DCUDAToolkit_ROOT=<toolkit>), or configure with -DMOE_WITH_CUDA=OFF.")
  if(MOE_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "moectl: ${what}. ${fix}")
  endif()
  message(WARNING "moectl: ${what}; building without the CUDA backend. ${fix}")
endfunction()
