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
