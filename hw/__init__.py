"""shiftbook.hw"""
