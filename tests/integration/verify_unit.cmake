# Runs `systemd-analyze verify` on a copy of the unit whose ExecStart names the
# daemon just built. Fails on any complaint.
file(READ ${UNIT} text)
string(REPLACE "/usr/local/bin/moectld" "${DAEMON}" text "${text}")
file(WRITE ${OUT} "${text}")
execute_process(COMMAND ${ANALYZE} verify ${OUT}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT "${err}" STREQUAL "")
  message(FATAL_ERROR "systemd-analyze verify failed (${rc}):\n${out}${err}")
endif()
message(STATUS "systemd-analyze verify: OK")
