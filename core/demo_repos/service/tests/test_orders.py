import unittest

from app import orders


class TotalTest(unittest.TestCase):
    def test_adds_every_line(self) -> None:
        order = {"lines": [{"sku": "apple", "qty": 4}, {"sku": "fig", "qty": 2}]}
        self.assertEqual(orders.total(order), 4.5)

    def test_rounds_to_cents(self) -> None:
        self.assertEqual(orders.total({"lines": [{"sku": "pear", "qty": 3}]}), 2.25)
