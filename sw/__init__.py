"""shiftbook.sw"""
