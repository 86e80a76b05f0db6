"""shiftbook.sw.estimate: cycle and energy estimates from a program bundle."""
