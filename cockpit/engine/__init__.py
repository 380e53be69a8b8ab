"""asyncio orchestration: session, supervisors, reconcile loops, event bus."""
