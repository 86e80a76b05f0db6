"""shiftbook.sim"""
