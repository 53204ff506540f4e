"""planner_service package."""
