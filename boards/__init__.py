"""shiftbook.boards"""
