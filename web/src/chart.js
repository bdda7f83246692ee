// Candlesticks with volume beneath, on the exchange's clock.

import { CandlestickSeries, ColorType, HistogramSeries, createChart } from 'lightweight-charts';
import { chartSeconds } from './time.js';

const UP = '#1e8e6e';
const DOWN = '#d0453f';

export class BarChart {
  constructor(container) {
    this.container = container;
    this.chart = createChart(container, {
      width: container.clientWidth,
      height: container.clientHeight,
      layout: { background: { type: ColorType.Solid, color: '#ffffff' }, textColor: '#2b2b2b' },
      grid: { vertLines: { color: '#f0f0f0' }, horzLines: { color: '#f0f0f0' } },
      timeScale: { timeVisible: true, secondsVisible: false },
      rightPriceScale: { scaleMargins: { top: 0.06, bottom: 0.3 } },
    });
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      wickUpColor: UP,
      wickDownColor: DOWN,
      borderVisible: false,
    });
    this.volume = this.chart.addSeries(HistogramSeries, {
      priceFormat: { type: 'volume' },
      priceScaleId: 'volume',
      lastValueVisible: false,
      priceLineVisible: false,
    });
    this.chart.priceScale('volume').applyOptions({ scaleMargins: { top: 0.76, bottom: 0 } });
    new ResizeObserver(() => {
      if (container.clientWidth > 0) this.chart.resize(container.clientWidth, container.clientHeight);
    }).observe(container);
  }

  /**
   * Draws `bars` (the API's, exact decimals as strings), fitted to the width when `fit`;
   * returns how many are drawn.
   */
  show(bars, exchange, fit = true) {
    const candles = [];
    const volume = [];
    let last = -Infinity;
    for (const b of bars) {
      let time = chartSeconds(b.start, exchange);
      // The hour a clock goes back repeats its wall times: keep the axis increasing.
      if (time <= last) time = last + 1;
      last = time;
      const [open, high, low, close] = [b.open, b.high, b.low, b.close].map(Number);
      candles.push({ time, open, high, low, close });
      volume.push({
        time,
        value: Number(b.volume),
        color: close >= open ? `${UP}88` : `${DOWN}88`,
      });
    }
    const decimals = Math.min(8, Math.max(2, ...bars.map((b) => places(b.high)), ...bars.map((b) => places(b.low))));
    this.candles.applyOptions({
      priceFormat: { type: 'price', precision: decimals, minMove: 10 ** -decimals },
    });
    this.candles.setData(candles);
    this.volume.setData(volume);
    if (fit) this.chart.timeScale().fitContent();
    const drawn = this.candles.data().length;
    this.container.dataset.bars = String(drawn);
    return drawn;
  }
}

const places = (text) => {
  const dot = String(text).indexOf('.');
  return dot < 0 ? 0 : String(text).length - dot - 1;
};
