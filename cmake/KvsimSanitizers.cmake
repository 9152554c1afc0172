# KVSIM_SANITIZE="address;undefined" builds every kvsim target with those sanitizers
# (after ceres-solver's WITH_SANITIZERS). Used by the Debug job of .ci/run.
function(kvsim_set_sanitizers target)
  if(KVSIM_SANITIZE)
    list(JOIN KVSIM_SANITIZE "," sanitizers)
    target_compile_options(${target} PRIVATE -fsanitize=${sanitizers} -fno-omit-frame-pointer
                                             -fno-sanitize-recover=all)
    target_link_options(${target} PUBLIC -fsanitize=${sanitizers})
  endif()
endfunction()
