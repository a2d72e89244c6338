# Rates the systemd unit with `systemd-analyze security --offline=true` (no
# running systemd needed) and fails above MAX_EXPOSURE (e.g. 2.5, on
# systemd's 0 to 10 scale). Prints "SKIP" when this systemd-analyze has no
# --offline (systemd before 250).
file(READ ${UNIT} text)
get_filename_component(name ${UNIT} NAME)
file(WRITE ${OUT_DIR}/${name} "${text}")
execute_process(COMMAND ${ANALYZE} security --offline=true --no-pager ${OUT_DIR}/${name}
  WORKING_DIRECTORY ${OUT_DIR}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if("${err}" MATCHES "unrecognized option|Unknown option")
  message(STATUS "SKIP: ${ANALYZE} cannot analyze offline: ${err}")
  return()
endif()
string(REGEX MATCH "Overall exposure level for ${name}: ([0-9]+\\.[0-9])" found "${out}")
if(NOT found)
  message(FATAL_ERROR "no exposure level in the output (${rc}):\n${out}${err}")
endif()
set(level ${CMAKE_MATCH_1})
if(level GREATER MAX_EXPOSURE)
  message(FATAL_ERROR "systemd-analyze security rates ${name} ${level}, above ${MAX_EXPOSURE}:\n${out}")
endif()
message(STATUS "systemd-analyze security: ${name} exposure ${level} (at most ${MAX_EXPOSURE})")
