"""monitord/runtime"""
