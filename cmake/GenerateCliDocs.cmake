# cmake -DPROGRAM=... -DCOMPLETION=... -DMAN=... -P GenerateCliDocs.cmake
# Asks a built program for its bash completion script and man page (both
# generated from its CLI11 definition, apps/cli/cli_docs.h) and writes them.
foreach(var PROGRAM COMPLETION MAN)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "GenerateCliDocs.cmake: -D${var}= is required")
  endif()
endforeach()
get_filename_component(completion_dir "${COMPLETION}" DIRECTORY)
get_filename_component(man_dir "${MAN}" DIRECTORY)
file(MAKE_DIRECTORY "${completion_dir}" "${man_dir}")
execute_process(COMMAND "${PROGRAM}" --generate-completion bash
  OUTPUT_FILE "${COMPLETION}" RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  file(REMOVE "${COMPLETION}")
  message(FATAL_ERROR "${PROGRAM} --generate-completion bash failed (${rc}): ${err}")
endif()
execute_process(COMMAND "${PROGRAM}" --generate-man
  OUTPUT_FILE "${MAN}" RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  file(REMOVE "${MAN}")
  message(FATAL_ERROR "${PROGRAM} --generate-man failed (${rc}): ${err}")
endif()
