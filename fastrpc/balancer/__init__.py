"""Client-side load balancing: Balancer (blocking) and AsyncBalancer (asyncio)
over many endpoints, and the strategies that pick among them."""
from fastrpc.balancer.aio import AsyncBalancer
from fastrpc.balancer.strategies import STRATEGIES, Strategy
from fastrpc.balancer.sync import Balancer, RetryBudget

__all__ = ["AsyncBalancer", "Balancer", "RetryBudget", "STRATEGIES", "Strategy"]
