# mqttbroker_set_warnings(<target>)
#   Strict warnings for a target of ours (tests, examples, benches), errors under MQTTBROKER_WERROR.
#   Third-party headers come in through imported targets, whose include folders are SYSTEM, so their
#   warnings stay silent.
function(mqttbroker_set_warnings target)
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 /permissive-)
    if(MQTTBROKER_WERROR)
      target_compile_options(${target} PRIVATE /WX)
    endif()
  else()
    target_compile_options(${target} PRIVATE
      -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow)
    if(MQTTBROKER_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
endfunction()
